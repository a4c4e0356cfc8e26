//! Slugs for server URLs (`/s/{slug}/mcp`) and org names.

/// Lower-case ASCII letters, digits and single dashes; 1 to 48 characters.
pub fn slugify(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let trimmed = out.trim_end_matches('-');
    let mut s: String = trimmed.chars().take(48).collect();
    while s.ends_with('-') {
        s.pop();
    }
    if s.is_empty() { "server".to_owned() } else { s }
}

/// Whether `s` is a valid slug as produced by [`slugify`].
pub fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 48
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugify_makes_valid_slugs() {
        assert_eq!(slugify("My Weather  API!"), "my-weather-api");
        assert_eq!(slugify("---"), "server");
        assert_eq!(slugify("Ünïcode name"), "n-code-name");
        for s in ["a", "My Weather API", &"x".repeat(100), "a - b"] {
            assert!(is_slug(&slugify(s)), "{s}");
        }
        assert!(!is_slug("Bad_Slug"));
        assert!(!is_slug("-a"));
    }
}
