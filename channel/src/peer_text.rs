//! Text a peer sent, made safe to print.
//!
//! A peer chooses the bytes of an error record's message, a websocket close
//! reason or an HTTP refusal body. Printed as they are, an ESC or a CR in
//! them drives the reader's terminal (moves the cursor, rewrites the line
//! above, sets the window title). [`escape`] keeps printable text and
//! spaces and writes every other character (control characters, tabs, line
//! breaks, DEL, the C1 controls, Unicode line and bidi controls) as a Rust
//! escape: `\x1b`, `\r`, `\n`, `\t`, `\u{202e}`.
//!
//! Call it where the peer's text enters one of our errors, so that every
//! consumer of the error is safe.
//!
//! ```
//! use transit_channel::peer_text::escape;
//!
//! assert_eq!(escape("disk full\x1b[2J\r"), "disk full\\x1b[2J\\r");
//! assert_eq!(escape("naïve café, 100 %"), "naïve café, 100 %");
//! ```

use std::fmt::Write;

/// `text` with every character that is not printable text or a space
/// replaced by its escape (see the [module documentation](self)).
pub fn escape(text: &str) -> String {
    if text.chars().all(passes) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if passes(c) && c != '\\' {
            out.push(c);
            continue;
        }
        match c {
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    out
}

/// True for a character that prints as itself and moves the cursor right
/// only: a space or a graphic character. A backslash is escaped too once
/// anything else is, so that `\x1b` in the output always means "the peer
/// sent ESC" there.
fn passes(c: char) -> bool {
    c == ' ' || !(c.is_control() || is_format_or_separator(c))
}

/// Unicode characters that are not control characters (`Cc`) but still
/// change how a line is laid out: line and paragraph separators, bidi
/// overrides and isolates, zero-width joiners and marks, the BOM.
fn is_format_or_separator(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{061c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
    )
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn printable_text_and_spaces_pass_unchanged() {
        for s in [
            "",
            "plain",
            "a b  c",
            "ünïcödé ✓ 日本",
            "C:\\path",
            "100 % {x}",
        ] {
            assert_eq!(escape(s), s);
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("a\x1b[31mb"), "a\\x1b[31mb");
        assert_eq!(escape("x\ry\nz\tw"), "x\\ry\\nz\\tw");
        assert_eq!(escape("\0\x07\x7f"), "\\x00\\x07\\x7f");
        // C1 controls, among them the 8-bit CSI.
        assert_eq!(escape("\u{9b}2J"), "\\x9b2J");
    }

    #[test]
    fn layout_changing_unicode_is_escaped() {
        assert_eq!(escape("ab\u{202e}cd"), "ab\\u{202e}cd");
        assert_eq!(escape("l1\u{2028}l2"), "l1\\u{2028}l2");
        assert_eq!(escape("z\u{200b}w"), "z\\u{200b}w");
    }

    #[test]
    fn a_backslash_is_escaped_once_anything_is() {
        // Otherwise a peer could send the four characters `\x1b` and have
        // them read like an escape we made.
        assert_eq!(escape("a\\b"), "a\\b");
        assert_eq!(escape("\\x1b\x1b"), "\\\\x1b\\x1b");
    }

    #[test]
    fn no_output_character_is_a_control() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let out = escape(&all);
        assert!(out.chars().all(|c| c == ' ' || !c.is_control()), "{out:?}");
    }
}
