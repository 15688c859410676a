//! Turning a token stream into text that is safe to show: token pieces may split a UTF-8
//! character, and a stop sequence may arrive across several tokens, so both are held back
//! until they are resolved.

/// Accumulates token bytes and releases complete UTF-8.
#[derive(Debug, Default)]
pub struct Utf8Buffer {
    pending: Vec<u8>,
}

impl Utf8Buffer {
    /// Add bytes; returns the text now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Invalid bytes: replace them and go on.
                        Some(n) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + n);
                        }
                    }
                }
            }
        }
    }
}

/// Watches generated text for stop sequences, holding back what could start one.
#[derive(Debug)]
pub struct StopWatch {
    stops: Vec<String>,
    held: String,
}

/// What to do with new text.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Show this (possibly empty) text and go on.
    Emit(String),
    /// A stop sequence was reached: show this text, then stop.
    Stop(String),
}

impl StopWatch {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Feed text.
    pub fn push(&mut self, text: &str) -> Step {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return Step::Emit(std::mem::take(&mut self.held));
        }
        if let Some(pos) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..pos].to_owned();
            self.held.clear();
            return Step::Stop(out);
        }
        // Keep the longest suffix that is a prefix of some stop sequence.
        let keep = self
            .stops
            .iter()
            .flat_map(|s| {
                (1..s.len().min(self.held.len() + 1))
                    .filter(|&k| {
                        self.held.is_char_boundary(self.held.len() - k)
                            && s.starts_with(&self.held[self.held.len() - k..])
                    })
                    .max()
            })
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_owned();
        self.held.drain(..cut);
        Step::Emit(out)
    }

    /// The text still held when generation ends for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens() {
        let mut b = Utf8Buffer::default();
        let bytes = "é😀".as_bytes();
        assert_eq!(b.push(&bytes[..1]), "");
        assert_eq!(b.push(&bytes[1..3]), "é");
        assert_eq!(b.push(&bytes[3..]), "😀");
        assert_eq!(b.push(&[b'a', 0xff, b'b']), "a\u{FFFD}b");
    }

    #[test]
    fn stop_sequences_across_tokens() {
        let mut w = StopWatch::new(&["\nUser:".into(), "###".into()]);
        assert_eq!(w.push("Hello"), Step::Emit("Hello".into()));
        assert_eq!(w.push(" there\nUs"), Step::Emit(" there".into()));
        assert_eq!(w.push("eful"), Step::Emit("\nUseful".into()));
        assert_eq!(w.push(" tip #"), Step::Emit(" tip ".into()));
        assert_eq!(w.push("## more"), Step::Stop("".into()));
        let mut w = StopWatch::new(&[]);
        assert_eq!(w.push("abc"), Step::Emit("abc".into()));
        let mut w = StopWatch::new(&["END".into()]);
        assert_eq!(w.push("the E"), Step::Emit("the ".into()));
        assert_eq!(w.flush(), "E");
    }
}
