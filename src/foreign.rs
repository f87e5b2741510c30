//! Text that came from outside the process (the agent, a peer's lease item, a FleetLock
//! server, a package's metadata), made safe to put in a message: bounded, and with its
//! control characters (and Unicode line breaks and direction overrides) escaped, so that it
//! cannot fill a log or forge a line of it.

/// The most characters of a foreign string a message quotes.
pub const SHOWN_CHARS: usize = 200;

/// `text` in at most [`SHOWN_CHARS`] characters (cut short with "…"), with every control
/// character escaped (`\n`, `\u{1b}`).
pub fn shown(text: &str) -> String {
    bounded(text, SHOWN_CHARS)
}

/// `text` in at most `limit` characters (cut short with "…"), with every control character
/// escaped.
pub fn bounded(text: &str, limit: usize) -> String {
    let mut out = String::with_capacity(text.len().min(limit * 4));
    // The character count of `out` at the end of each piece, to cut between pieces.
    let mut ends = Vec::new();
    let mut count = 0;
    for c in text.chars() {
        if unsafe_to_show(c) {
            out.extend(c.escape_default());
            count += c.escape_default().count();
        } else {
            out.push(c);
            count += 1;
        }
        ends.push((out.len(), count));
        if count > limit {
            // Too long: keep the pieces that leave room for the "…".
            let keep = ends.iter().rev().find(|(_, chars)| *chars < limit).map_or(0, |(bytes, _)| *bytes);
            out.truncate(keep);
            out.push('…');
            return out;
        }
    }
    out
}

/// A control character, a line or paragraph separator, or a direction mark or override: each
/// could break a log line or make it read other than it is.
fn unsafe_to_show(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
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
        assert_eq!(cut.chars().count(), SHOWN_CHARS);
        assert!(cut.ends_with('…'));
        let escapes = bounded(&"\n".repeat(100), 9);
        assert_eq!(escapes, "\\n\\n\\n\\n…");
        assert_eq!(bounded("exactly", 7), "exactly");
        assert_eq!(shown("a\u{2028}b\u{202E}c"), "a\\u{2028}b\\u{202e}c");
    }
}
