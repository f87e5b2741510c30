//! Text that came from outside the process (the agent, a peer's lease item, a FleetLock
//! server, a package's metadata), made safe to put in a message: bounded, and with its
//! control characters escaped, so that it cannot fill a log or forge a line of it.

/// The most characters of a foreign string a message quotes.
pub const SHOWN_CHARS: usize = 200;

/// `text` bounded to [`SHOWN_CHARS`] characters (then "…"), with every control character
/// escaped (`\n`, `\u{1b}`).
pub fn shown(text: &str) -> String {
    bounded(text, SHOWN_CHARS)
}

/// `text` bounded to `limit` characters (then "…"), with every control character escaped.
pub fn bounded(text: &str, limit: usize) -> String {
    let mut out = String::with_capacity(text.len().min(limit * 2));
    for (i, c) in text.chars().enumerate() {
        if i == limit {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_and_control_characters_escaped() {
        assert_eq!(shown("plain"), "plain");
        assert_eq!(shown("two\nlines\x1b[31m"), "two\\nlines\\u{1b}[31m");
        let long = "é".repeat(1000);
        let cut = shown(&long);
        assert_eq!(cut.chars().count(), SHOWN_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
