//! `coachlibre chat --model NAME "prompt"`: one turn with a configured model, streamed to the
//! terminal.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use coachlibre_core::model::{ChatEvent, ChatMessage, ChatRequest, GenerationParams};
use coachlibre_server::config::Config;
use futures_util::StreamExt;

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// `smollm2-135m-instruct` (embedded), a provider or a chain named in the configuration.
    #[arg(long)]
    model: String,
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// 0 for greedy decoding.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    #[arg(long)]
    seed: Option<u64>,
    /// What to say.
    prompt: String,
}

pub async fn run(config: &Config, args: ChatArgs) -> anyhow::Result<()> {
    let model = config.model_registry().chat(&args.model)?;
    let mut messages = Vec::new();
    if let Some(s) = args.system {
        messages.push(ChatMessage::system(s));
    }
    messages.push(ChatMessage::user(args.prompt));
    let request = ChatRequest {
        messages,
        tools: Vec::new(),
        params: GenerationParams {
            max_tokens: args.max_tokens,
            temperature: args.temperature,
            seed: args.seed,
            ..GenerationParams::default()
        },
    };
    let mut stream = model
        .chat(request)
        .await
        .with_context(|| format!("asking {}", args.model))?;
    let mut out = std::io::stdout().lock();
    while let Some(event) = stream.next().await {
        match event? {
            ChatEvent::Token(t) => {
                out.write_all(t.as_bytes())?;
                out.flush()?;
            }
            ChatEvent::ToolCall(c) => writeln!(out, "\n[tool call {}: {}]", c.name, c.arguments)?,
            ChatEvent::Waiting { ahead } => eprintln!("[the model is busy: {ahead} before this]"),
            ChatEvent::Done { usage, finish } => {
                writeln!(out)?;
                eprintln!(
                    "[{finish:?}; {} prompt + {} completion tokens; ${:.6}]",
                    usage.prompt_tokens, usage.completion_tokens, usage.cost_usd
                );
            }
        }
    }
    Ok(())
}
