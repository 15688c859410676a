//! Prompt assembly: the persona, the pinned profile, recalled memories, the rolling summary,
//! and the recent turns that fit the agent's window. Older turns are folded into the summary.

use coachlibre_core::agent::Agent;
use coachlibre_core::conversation::Message;
use coachlibre_core::knowledge::Passage;
use coachlibre_core::memory::{Memory, Profile};
use coachlibre_core::model::{ChatMessage, ChatRole};

/// Longest rolling summary kept.
pub const MAX_SUMMARY_CHARS: usize = 2_000;

/// A rough token count for budgeting the window (4 characters per token, plus framing).
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.chars().count() / 4 + 4).unwrap_or(u32::MAX)
}

/// The system prompt.
pub fn system_prompt(
    agent: &Agent,
    profile: &Profile,
    memories: &[Memory],
    sources: &[Passage],
    summary: &str,
    extra_instructions: &[String],
) -> String {
    let mut s = String::with_capacity(agent.persona.len() + 512);
    if agent.persona.trim().is_empty() {
        s.push_str("You are a helpful coach.");
    } else {
        s.push_str(agent.persona.trim());
    }
    for extra in extra_instructions {
        s.push_str("\n\n");
        s.push_str(extra.trim());
    }
    if !profile.is_empty() {
        s.push_str("\n\nAbout the client:");
        for (field, value) in profile.fields() {
            s.push_str("\n- ");
            s.push_str(field);
            s.push_str(": ");
            s.push_str(value);
        }
    }
    if !memories.is_empty() {
        s.push_str("\n\nWhat you remember about the client:");
        for m in memories {
            s.push_str("\n- (");
            s.push_str(m.kind.as_str());
            s.push_str(") ");
            s.push_str(&m.content);
        }
    }
    if !sources.is_empty() {
        s.push_str(
            "\n\nPassages from your coach's material. Answer from them when they are relevant \
             and cite them by number, like [1]:",
        );
        for (i, p) in sources.iter().enumerate() {
            s.push_str(&format!("\n[{}] {}", i + 1, p.title));
            if !p.heading.is_empty() && p.heading != p.title {
                s.push_str(" > ");
                s.push_str(&p.heading);
            }
            s.push_str(": ");
            s.push_str(p.text.trim());
        }
    }
    if !summary.trim().is_empty() {
        s.push_str("\n\nSummary of your earlier conversation:\n");
        s.push_str(summary.trim());
    }
    s.push_str("\n\nToday is ");
    s.push_str(&coachlibre_core::now().format("%A %Y-%m-%d").to_string());
    s.push_str(" (UTC).");
    s
}

/// A stored message as the model sees it.
pub fn to_chat(m: &Message) -> ChatMessage {
    ChatMessage {
        role: m.role,
        content: m.content.clone(),
        tool_calls: m.tool_calls.clone(),
        tool_call_id: m.tool_call_id.clone(),
    }
}

/// Split history (oldest first) into what folds into the summary and the window that fits
/// `window_tokens`. The newest message always stays, and a window never starts with a tool
/// result separated from the call that asked for it.
pub fn split_window(history: &[Message], window_tokens: u32) -> (&[Message], &[Message]) {
    let mut used: u32 = 0;
    let mut start = history.len();
    for (i, m) in history.iter().enumerate().rev() {
        let cost = message_tokens(m);
        if start < history.len() && used.saturating_add(cost) > window_tokens {
            break;
        }
        used = used.saturating_add(cost);
        start = i;
    }
    while start < history.len() && history[start].role == ChatRole::Tool {
        start += 1;
    }
    history.split_at(start)
}

/// What to fold before this turn: nothing while the history fits `window_tokens`; once it
/// overflows, everything but the newest half-window. Folding in steps of half a window (rather
/// than a message or two each turn) keeps summarising (a model call) to one turn in several.
pub fn plan_window(history: &[Message], window_tokens: u32) -> (&[Message], &[Message]) {
    let total: u32 = history.iter().map(message_tokens).sum();
    if total <= window_tokens {
        return (&[], history);
    }
    split_window(history, window_tokens / 2)
}

fn message_tokens(m: &Message) -> u32 {
    estimate_tokens(&m.content)
        + m.tool_calls
            .iter()
            .map(|c| estimate_tokens(&c.arguments.to_string()))
            .sum::<u32>()
}

/// The request that asks a model to fold old turns into the summary.
pub fn summary_request(previous: &str, folded: &[Message]) -> Vec<ChatMessage> {
    let mut transcript = String::new();
    if !previous.trim().is_empty() {
        transcript.push_str("Earlier summary: ");
        transcript.push_str(previous.trim());
        transcript.push_str("\n\n");
    }
    for m in folded {
        let who = match m.role {
            ChatRole::User => "Client",
            ChatRole::Assistant => "Coach",
            _ => continue,
        };
        if m.content.trim().is_empty() {
            continue;
        }
        transcript.push_str(who);
        transcript.push_str(": ");
        transcript.push_str(m.content.trim());
        transcript.push('\n');
    }
    vec![
        ChatMessage::system(
            "You summarize coaching conversations. In at most five sentences, keep what \
             matters later: the client's facts, goals, commitments, progress and feelings. \
             Write only the summary.",
        ),
        ChatMessage::user(transcript),
    ]
}

/// A summary built without a model, when the model cannot make one: the earlier summary
/// followed by the opening of each of the client's folded messages.
pub fn fallback_summary(previous: &str, folded: &[Message]) -> String {
    let mut s = previous.trim().to_owned();
    for m in folded.iter().filter(|m| m.role == ChatRole::User) {
        let opening: String = m.content.trim().chars().take(120).collect();
        if opening.is_empty() {
            continue;
        }
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str("Client said: ");
        s.push_str(&opening);
        s.push('.');
    }
    clamp_summary(&s)
}

/// Keep the newest part of a summary that grew too long.
pub fn clamp_summary(s: &str) -> String {
    let n = s.chars().count();
    if n <= MAX_SUMMARY_CHARS {
        return s.to_owned();
    }
    s.chars().skip(n - MAX_SUMMARY_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use coachlibre_core::ids::{ConversationId, TenantId};
    use coachlibre_core::model::ToolCall;

    fn msg(role: ChatRole, text: &str) -> Message {
        Message::new(TenantId::generate(), ConversationId::generate(), role, text)
    }

    #[test]
    fn window_keeps_the_newest_that_fit() {
        let h: Vec<Message> = (0..10)
            .map(|i| msg(ChatRole::User, &format!("{i}{}", "x".repeat(39))))
            .collect();
        // Each message costs 40/4 + 4 = 14 tokens.
        let (fold, window) = split_window(&h, 14 * 3);
        assert_eq!(fold.len(), 7);
        assert_eq!(window.len(), 3);
        assert!(window[0].content.starts_with('7'));
        // A huge newest message is kept alone.
        let big = vec![msg(ChatRole::User, &"y".repeat(10_000))];
        assert_eq!(split_window(&big, 10).1.len(), 1);
    }

    #[test]
    fn folding_waits_for_an_overflow_then_halves_the_window() {
        let h: Vec<Message> = (0..10)
            .map(|i| msg(ChatRole::User, &format!("{i}{}", "x".repeat(39))))
            .collect();
        // 10 messages of 14 tokens: they fit in 140, nothing folds.
        assert!(plan_window(&h, 140).0.is_empty());
        // One token short: fold all but the newest half-window (69 tokens: 4 messages).
        let (fold, keep) = plan_window(&h, 139);
        assert_eq!((fold.len(), keep.len()), (6, 4));
    }

    #[test]
    fn window_never_starts_with_an_orphan_tool_result() {
        let mut call = msg(ChatRole::Assistant, "");
        call.tool_calls = vec![ToolCall {
            id: "1".into(),
            name: "list_goals".into(),
            arguments: serde_json::json!({}),
        }];
        let h = vec![
            msg(ChatRole::User, "hello"),
            call,
            msg(ChatRole::Tool, &"r".repeat(40)),
            msg(ChatRole::Assistant, &"a".repeat(40)),
        ];
        let (fold, window) = split_window(&h, 30);
        assert_eq!(window.len(), 1);
        assert_eq!(fold.len(), 3);
    }

    #[test]
    fn summaries_fall_back_and_stay_bounded() {
        let h = vec![
            msg(ChatRole::User, "I want to run"),
            msg(ChatRole::Assistant, "Great"),
        ];
        assert_eq!(
            fallback_summary("Earlier.", &h),
            "Earlier. Client said: I want to run."
        );
        let long = "z".repeat(MAX_SUMMARY_CHARS + 10);
        assert_eq!(clamp_summary(&long).chars().count(), MAX_SUMMARY_CHARS);
        let req = summary_request("", &h);
        assert!(
            req[1]
                .content
                .contains("Client: I want to run\nCoach: Great")
        );
    }
}
