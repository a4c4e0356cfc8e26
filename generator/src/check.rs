//! The last gate every generated spec passes before it leaves this crate:
//! `bmm_spec::validate` (shape, names, hosts, templates, limits, banned code,
//! prompt-injection markers), as `field: message` lines that both a model
//! (for self-correction) and a person can act on.

use bmm_spec::ToolSpec;

pub(crate) use bmm_spec::validate::{MAX_DESCRIPTION_BYTES, MAX_TOOLS};

/// Problems with `spec`, each as `field: message`; empty when the spec is usable.
pub fn validate_spec(spec: &ToolSpec) -> Vec<String> {
    match bmm_spec::validate(spec) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_specs_pass_and_problems_name_their_field() {
        assert!(validate_spec(&bmm_spec::testing::http_spec()).is_empty());
        let mut s = bmm_spec::testing::echo_spec();
        s.tools.push(s.tools[0].clone());
        s.tools[1].name = "get pet".into();
        let errors = validate_spec(&s);
        assert!(errors.iter().any(|e| e.starts_with("tools[1].name: ")), "{errors:?}");
    }
}
