//! The shape producers write, decoded without serde_json's machinery: one flat JSON object
//! whose keys and string values have no escapes, whose values are strings, numbers, `true`,
//! `false` or `null`. Each value goes to the same visitor serde_json would call
//! ([`ValueSeed`]), so a row decodes to the same values either way.
//!
//! Anything else (an escape, a nested value, a value its column rejects, a syntax error) makes
//! [`decode`] return `None`; the caller then rolls the row back and parses the record with
//! serde_json, which decodes it or says why not, with its position.

use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, Visitor};

use super::{JsonDecoder, ValueSeed};

/// The error type the visitors are called with; its message is never read (serde_json's own
/// parse gives the reason).
type Unread = serde_json::Error;

/// Decodes `text` into the decoder's column buffers, or returns `None` part way (the caller
/// rolls back what was pushed).
pub(super) fn decode(d: &mut JsonDecoder, text: &str) -> Option<()> {
    let mut c = Cursor { text, at: 0 };
    c.skip_whitespace();
    c.eat(b'{')?;
    c.skip_whitespace();
    if c.eat(b'}').is_none() {
        loop {
            c.eat(b'"')?;
            let key = c.plain_string()?;
            c.skip_whitespace();
            c.eat(b':')?;
            c.skip_whitespace();
            match d.column_of(key) {
                Some(i) => value(&mut c, d.field(i))?,
                None => ignored(&mut c)?,
            }
            c.skip_whitespace();
            match c.next()? {
                b',' => c.skip_whitespace(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    c.skip_whitespace();
    (c.at == text.len()).then_some(())
}

/// One value into its column, through the visitor serde_json would call for it.
fn value(c: &mut Cursor<'_>, seed: ValueSeed<'_>) -> Option<()> {
    match c.peek()? {
        b'"' => {
            c.at += 1;
            seed.visit_str::<Unread>(c.plain_string()?).ok()
        }
        b'n' => c.literal("null").and_then(|()| seed.visit_unit::<Unread>().ok()),
        b't' => c.literal("true").and_then(|()| seed.visit_bool::<Unread>(true).ok()),
        b'f' => c.literal("false").and_then(|()| seed.visit_bool::<Unread>(false).ok()),
        b'-' | b'0'..=b'9' => {
            let number = c.number();
            match small_natural(number) {
                Some(n) => seed.visit_u64::<Unread>(n).ok(),
                // Negative numbers, fractions and exponents as serde_json reads them (its
                // choice of integer or float, its rounding).
                None => {
                    let mut de = serde_json::Deserializer::from_str(number);
                    seed.deserialize(&mut de).and_then(|()| de.end()).ok()
                }
            }
        }
        _ => None,
    }
}

/// A value of a key outside the schema, skipped; it must still be valid JSON.
fn ignored(c: &mut Cursor<'_>) -> Option<()> {
    match c.peek()? {
        b'"' => {
            c.at += 1;
            c.plain_string().map(drop)
        }
        b'n' => c.literal("null"),
        b't' => c.literal("true"),
        b'f' => c.literal("false"),
        b'-' | b'0'..=b'9' => {
            let number = c.number();
            if small_natural(number).is_some() {
                return Some(());
            }
            let mut de = serde_json::Deserializer::from_str(number);
            IgnoredAny::deserialize(&mut de).and_then(|_| de.end()).ok()
        }
        _ => None,
    }
}

/// Digits without a sign, fraction, exponent or leading zero, at most 18 of them (below
/// `i64::MAX`): what serde_json reads as a `u64`.
fn small_natural(number: &str) -> Option<u64> {
    let digits = number.as_bytes();
    if digits.is_empty() || digits.len() > 18 || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    digits
        .iter()
        .try_fold(0u64, |n, &d| d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0')))
}

struct Cursor<'t> {
    text: &'t str,
    /// Always at an ASCII byte or the end: only ASCII bytes and whole strings are passed.
    at: usize,
}

impl<'t> Cursor<'t> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn eat(&mut self, expected: u8) -> Option<()> {
        (self.peek()? == expected).then(|| self.at += 1)
    }

    /// JSON's whitespace, as serde_json skips it.
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// The rest of a string whose opening quote was read, if it has no escape and no control
    /// character (serde_json rejects those unescaped).
    fn plain_string(&mut self) -> Option<&'t str> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        loop {
            match *bytes.get(self.at)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.at += 1,
            }
        }
        let s = self.text.get(start..self.at)?;
        self.at += 1;
        Some(s)
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let rest = self.text.as_bytes().get(self.at..)?;
        rest.starts_with(word.as_bytes()).then(|| self.at += word.len())
    }

    /// The bytes a number can hold, unchecked (serde_json checks what is not a plain natural).
    fn number(&mut self) -> &'t str {
        let start = self.at;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
            self.at += 1;
        }
        &self.text[start..self.at]
    }
}
