//! Test files built in code: a real, minimal PDF (one page, Helvetica, one line per string),
//! an encrypted-looking one and a hostile one.

/// Escape text for a PDF string literal.
fn pdf_string(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('(', "\\(")
        .replace(')', "\\)")
}

/// A valid one-page PDF whose text is `lines` (ASCII), one per line.
pub fn pdf(lines: &[&str]) -> Vec<u8> {
    pdf_with_trailer(lines, "")
}

/// The same, with an `/Encrypt` entry in its trailer (a reader must refuse it without the
/// password).
pub fn encrypted_pdf(lines: &[&str]) -> Vec<u8> {
    pdf_with_trailer(
        lines,
        " /Encrypt 6 0 R /ID [<00112233445566778899aabbccddeeff> <00112233445566778899aabbccddeeff>]",
    )
}

/// A well-formed PDF whose page draws its text with an array nested `depth` deep (a
/// recursive parser overflows its stack on it).
pub fn nested_pdf(depth: usize) -> Vec<u8> {
    let content = format!(
        "BT /F1 12 Tf 72 720 Td (Nested) Tj {}(x){} TJ ET",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    pdf_of(&content, "")
}

fn pdf_with_trailer(lines: &[&str], trailer_extra: &str) -> Vec<u8> {
    let mut content = String::from("BT /F1 12 Tf 72 720 Td 16 TL\n");
    for l in lines {
        content.push_str(&format!("({}) Tj T*\n", pdf_string(l)));
    }
    content.push_str("ET");
    pdf_of(&content, trailer_extra)
}

fn pdf_of(content: &str, trailer_extra: &str) -> Vec<u8> {
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_owned(),
        format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_owned(),
    ];
    if !trailer_extra.is_empty() {
        objects.push(
            "<< /Filter /Standard /V 2 /R 3 /Length 128 /P -4 \
             /O <0000000000000000000000000000000000000000000000000000000000000000> \
             /U <0000000000000000000000000000000000000000000000000000000000000000> >>"
                .to_owned(),
        );
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R{trailer_extra} >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}
