//! MCP-safe names for tools, arguments and credentials.

use std::collections::BTreeSet;

/// Longest tool name MCP clients accept (`^[a-zA-Z][a-zA-Z0-9_-]{0,63}$`).
pub(crate) const MAX_NAME: usize = 64;

/// `listPets`, `repos/list-for-org`, `GET /pets/{petId}` → `list_pets`,
/// `repos_list_for_org`, `get_pets_pet_id`: lower snake case, ASCII only,
/// starting with a letter, at most 64 characters.
pub(crate) fn snake_case(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            out.push('_');
            continue;
        }
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            // `getPet` → get_pet; `getHTTPStatus` → get_http_status.
            if prev.is_ascii_lowercase() || prev.is_ascii_digit() || (prev.is_ascii_uppercase() && next_lower) {
                out.push('_');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    let mut collapsed = String::with_capacity(out.len());
    for c in out.chars() {
        if c == '_' && (collapsed.is_empty() || collapsed.ends_with('_')) {
            continue;
        }
        collapsed.push(c);
    }
    let mut name = collapsed.trim_end_matches('_').to_owned();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name = format!("op_{name}").trim_end_matches('_').to_owned();
    }
    truncate(&name, MAX_NAME)
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect::<String>().trim_end_matches('_').to_owned()
}

/// `base`, or `base_2`, `base_3`, … whichever is not yet in `taken`; records it.
pub(crate) fn unique(base: &str, taken: &mut BTreeSet<String>) -> String {
    if taken.insert(base.to_owned()) {
        return base.to_owned();
    }
    for n in 2.. {
        let suffix = format!("_{n}");
        let candidate = format!("{}{suffix}", truncate(base, MAX_NAME - suffix.len()));
        if taken.insert(candidate.clone()) {
            return candidate;
        }
    }
    unreachable!("an unused suffix exists")
}

/// Whether `name` can be an argument: a property of the input schema that
/// also works as a `{name}` placeholder in the runner's HTTP call
/// (`[A-Za-z_][A-Za-z0-9_-]*`).
pub(crate) fn is_arg_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && name.len() <= MAX_NAME
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// An argument name for a wire name: unchanged when valid, else sanitised.
pub(crate) fn arg_name(wire: &str) -> String {
    if is_arg_name(wire) {
        return wire.to_owned();
    }
    let mut s: String = wire.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    s = s.trim_matches('_').to_owned();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        s = format!("_{s}");
    }
    s.chars().take(MAX_NAME).collect()
}

/// `petstore_auth`, `bearerAuth` → `PETSTORE_AUTH`, `BEARER_AUTH`: an environment variable name.
pub(crate) fn env_key(raw: &str) -> String {
    // Words split at separators and lower→upper steps only, so acronyms stay
    // whole: `OAuth2` → OAUTH2, `bearerAuth` → BEARER_AUTH.
    let mut key = String::new();
    let mut prev: Option<char> = None;
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase() && prev.is_some_and(|p| p.is_ascii_lowercase()) {
                key.push('_');
            }
            key.push(c.to_ascii_uppercase());
        } else if !key.is_empty() && !key.ends_with('_') {
            key.push('_');
        }
        prev = Some(c);
    }
    let key = key.trim_end_matches('_');
    let key = if key.starts_with(|c: char| c.is_ascii_alphabetic()) { key.to_owned() } else { format!("KEY_{key}") };
    truncate(&key, MAX_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_handles_ids_paths_and_acronyms() {
        assert_eq!(snake_case("listPets"), "list_pets");
        assert_eq!(snake_case("showPetById"), "show_pet_by_id");
        assert_eq!(snake_case("repos/list-for-org"), "repos_list_for_org");
        assert_eq!(snake_case("get /pets/{petId}"), "get_pets_pet_id");
        assert_eq!(snake_case("getHTTPStatus"), "get_http_status");
        assert_eq!(snake_case("GetV2Items"), "get_v2_items");
        assert_eq!(snake_case("2fa-enable"), "op_2fa_enable");
        assert_eq!(snake_case("über-Größe"), "ber_gr_e");
        assert_eq!(snake_case(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn unique_appends_a_counter() {
        let mut taken = BTreeSet::new();
        assert_eq!(unique("a", &mut taken), "a");
        assert_eq!(unique("a", &mut taken), "a_2");
        assert_eq!(unique("a", &mut taken), "a_3");
        let long = "y".repeat(64);
        assert_eq!(unique(&long, &mut taken), long);
        assert_eq!(unique(&long, &mut taken).len(), 64);
    }

    #[test]
    fn argument_names() {
        assert_eq!(arg_name("per_page"), "per_page");
        assert_eq!(arg_name("X-Request-Id"), "X-Request-Id");
        assert_eq!(arg_name("expand[]"), "expand");
        assert_eq!(arg_name("1st"), "_1st");
        assert_eq!(arg_name("filter.name"), "filter_name");
        assert!(!is_arg_name("a b"));
    }

    #[test]
    fn env_keys() {
        assert_eq!(env_key("petstore_auth"), "PETSTORE_AUTH");
        assert_eq!(env_key("bearerAuth"), "BEARER_AUTH");
        assert_eq!(env_key("api_key"), "API_KEY");
        assert_eq!(env_key("1password"), "KEY_1PASSWORD");
        assert_eq!(env_key("OAuth2"), "OAUTH2");
        assert_eq!(env_key("basic-auth!"), "BASIC_AUTH");
    }
}
