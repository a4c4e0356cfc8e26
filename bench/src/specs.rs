//! Descriptions the offline generator turns into distinct specs, so every
//! build of a run has its own bundle (and so its own image: no build reuses
//! another's cached image).

/// Phrases the offline generator recognises, one tool (base64: two) each.
const PHRASES: &[&str] =
    &["echo", "word count", "uppercase", "lowercase", "reverse text", "current time", "uuid", "base64"];

/// The `i`-th description of a run that starts at `offset`: a distinct set of
/// at least three phrases for every `i` below 200.
pub fn description(offset: usize, i: usize) -> String {
    let masks: Vec<u32> = (1u32..256).filter(|m| m.count_ones() >= 3).collect();
    let mask = masks[(offset + i) % masks.len()];
    let picked: Vec<&str> = PHRASES.iter().enumerate().filter(|(b, _)| mask & (1 << b) != 0).map(|(_, p)| *p).collect();
    format!("A server with these tools: {}.", picked.join(", "))
}

/// A start offset that differs between runs (so a rerun rarely meets an
/// image a previous run left behind).
pub fn run_offset() -> usize {
    (uuid::Uuid::new_v4().as_u128() % 1000) as usize
}
