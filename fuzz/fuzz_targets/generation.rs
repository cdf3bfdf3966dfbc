//! What text generation reads from model files and requests: chat templates (a GGUF or
//! tokenizer_config.json carries its own Jinja source) rendered over arbitrary messages and
//! tools, stop strings matched over arbitrary streamed text, and tool calls parsed out of it in
//! every format, streamed in arbitrary pieces.
#![no_main]
use aiserve_core::chat::{ChatTemplate, Message};
use aiserve_core::stop::StopStrings;
use aiserve_core::tools::{calls_of_required, ToolFormat, ToolParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1}');
    let source = parts.next().unwrap_or_default();
    let content = parts.next().unwrap_or_default();
    if let Ok(t) = ChatTemplate::new(source, "<s>", "</s>") {
        let _ = t.render(&[Message::new("system", "s"), Message::new("user", content)], true);
        if let Ok(serde_json::Value::Array(tools)) = serde_json::from_str(content) {
            let _ = t.render_with_tools(&[Message::new("user", "u")], Some(&tools), true);
        }
    }
    let stops: Vec<String> = parts.next().unwrap_or_default().split('\u{2}').map(str::to_owned).collect();
    let mut s = StopStrings::new(stops);
    let mut out = String::new();
    for piece in parts {
        let r = s.push(piece);
        out.push_str(&r.text);
        if r.stopped {
            break;
        }
    }
    out.push_str(&s.finish());
    let pieces: Vec<&str> = text.split('\u{3}').collect();
    for format in [ToolFormat::Hermes, ToolFormat::Llama3Json, ToolFormat::Mistral] {
        let mut p = ToolParser::new(format);
        for piece in &pieces {
            let _ = p.push(piece);
        }
        let _ = p.finish();
    }
    let _ = calls_of_required(&text, Some(ToolFormat::Mistral));
});
