//! Names of hives, boxes, frames and columns used in paths.
//!
//! A name is a plain SQL identifier: an ASCII letter, then letters, digits or `_`, at most 128
//! bytes. Names are case-sensitive and stored as given; since SQL folds unquoted identifiers to
//! lower case, lower-case names are the ones that need no quoting. Two names of one namespace
//! that differ only in case are refused (they would collide on case-insensitive file systems).
//! Everything else — empty, `..`, `/`, `\`, NUL, a leading `_` (reserved for Apiary's own
//! objects), a leading digit — is refused with an error naming the bad name, so nothing is
//! ever written outside the meadow's root.

use crate::error::{CatalogError, Kind, Result};

/// The longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Checks that `name` is a valid name of the given kind.
pub fn validate(kind: Kind, name: &str) -> Result<()> {
    let refuse = |reason| {
        Err(CatalogError::InvalidName {
            kind,
            name: name.to_string(),
            reason,
        })
    };
    let Some(first) = name.bytes().next() else {
        return refuse("names must not be empty");
    };
    if name.len() > MAX_NAME_LEN {
        return refuse("names are at most 128 bytes long");
    }
    if first == b'_' {
        return refuse("names starting with `_` are reserved for Apiary's own objects");
    }
    if !first.is_ascii_alphabetic() {
        return refuse("names start with an ASCII letter");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return refuse("names contain only ASCII letters, digits and `_`");
    }
    Ok(())
}

/// `hive.box.frame` for messages.
pub fn qualified(parts: &[&str]) -> String {
    parts.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_sql_identifiers() {
        for ok in ["a", "sales", "Orders_2024", "x1_y2", &"a".repeat(128)] {
            validate(Kind::Frame, ok).unwrap();
        }
    }

    #[test]
    fn refuses_everything_else_naming_it() {
        let long = "a".repeat(129);
        for bad in [
            "", "..", ".", "a/b", "a\\b", "a\0b", "_ledger", "1abc", "a b", "a-b", "a.b", "é",
            &long,
        ] {
            let err = validate(Kind::Box, bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(err.starts_with("invalid box name"), "{err}");
        }
    }
}
