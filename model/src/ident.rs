//! Route and target names as Rust identifiers. Names may use letters, digits, `-` and `_`;
//! `Orders-EU` becomes the field `orders_eu` and the variant `OrdersEu`.

/// Whether `name` uses only the characters routes.yaml allows in names.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// snake_case identifier: lower case, `-` as `_`, a leading digit guarded by `_`, a keyword
/// followed by `_`.
pub fn snake(name: &str) -> String {
    let mut ident: String = name
        .chars()
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    if ident.starts_with(|c: char| c.is_ascii_digit()) {
        ident.insert(0, '_');
    }
    if ident == "_" || is_keyword(&ident) {
        ident.push('_');
    }
    ident
}

/// UpperCamelCase identifier: each `-`/`_`-separated word capitalised, a leading digit
/// guarded by `R`.
pub fn camel(name: &str) -> String {
    let mut ident = String::with_capacity(name.len() + 1);
    for word in name.split(['-', '_']).filter(|w| !w.is_empty()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            ident.push(first.to_ascii_uppercase());
            ident.extend(chars.map(|c| c.to_ascii_lowercase()));
        }
    }
    if ident.is_empty() || ident.starts_with(|c: char| c.is_ascii_digit()) {
        ident.insert(0, 'R');
    }
    if is_keyword(&ident) {
        ident.push('_');
    }
    ident
}

fn is_keyword(ident: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum",
        "extern", "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod",
        "move", "mut", "pub", "ref", "return", "self", "Self", "static", "struct", "super",
        "trait", "true", "type", "unsafe", "use", "where", "while", "abstract", "become", "box",
        "do", "final", "macro", "override", "priv", "try", "typeof", "unsized", "virtual", "yield",
        "union",
    ];
    KEYWORDS.contains(&ident)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_identifiers() {
        assert_eq!(snake("Orders-EU"), "orders_eu");
        assert_eq!(camel("Orders-EU"), "OrdersEu");
        assert_eq!(snake("2fa"), "_2fa");
        assert_eq!(camel("2fa"), "R2fa");
        assert_eq!(snake("type"), "type_");
        assert_eq!(camel("self"), "Self_");
        assert_eq!(snake("_"), "__");
        assert_eq!(camel("_"), "R");
    }

    #[test]
    fn every_identifier_parses_as_one() {
        for name in [
            "a",
            "Orders-EU",
            "2fa",
            "type",
            "self",
            "_",
            "-",
            "a--b",
            "__x__",
        ] {
            syn::parse_str::<syn::Ident>(&snake(name)).unwrap();
            syn::parse_str::<syn::Ident>(&camel(name)).unwrap();
        }
    }
}
