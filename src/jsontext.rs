//! A strict reader of JSON text (RFC 8259, over bytes) for the few facts
//! the extension reads from metadata in Rust: the in-place heartbeat
//! (`crate::beat`) and the rows `orphaned_runs` computes (`crate::orphans`).
//!
//! It accepts a subset of what every SQLite version's JSON functions accept
//! (no JSON5, valid UTF-8, nesting up to [`MAX_DEPTH`]), so what it reads is
//! what SQLite would read; its callers treat anything it refuses as "not
//! sure" and let SQLite's own functions decide. Top-level keys spelled with
//! an escape are refused too: SQLite 3.40 compares keys as written, 3.45+
//! decoded, so such a key may or may not be the one a path names.

/// Nesting deeper than this is left to SQLite (whose own limit is 1,000 or
/// more), so nothing SQLite refuses for depth is accepted here.
const MAX_DEPTH: usize = 64;

/// One member of the top-level object.
pub(crate) struct Member<'a> {
    /// The key as written, between its quotes (never holding an escape).
    pub key: &'a [u8],
    /// The value's text.
    pub value: &'a [u8],
    /// Where the value starts in the text.
    pub start: usize,
    /// Whether the value holds no whitespace outside its strings (so it is
    /// written as SQLite's `->` writes it).
    pub compact: bool,
}

/// Calls `visit` with each member of `text`'s top-level object, in order.
/// `None` when `text` is not strict JSON with nothing after it, is not an
/// object, has a top-level key spelled with an escape, or when `visit`
/// returns `None`. (UTF-8 is the caller's check: it holds a `str`.)
pub(crate) fn object_members<'a>(
    text: &'a str,
    mut visit: impl FnMut(Member<'a>) -> Option<()>,
) -> Option<()> {
    let text = text.as_bytes();
    let mut p = Parser {
        s: text,
        i: 0,
        spaces: 0,
    };
    p.ws();
    if p.peek() != Some(b'{') {
        return None;
    }
    p.members(b'}', |p| {
        let key = p.string()?;
        if key.contains(&b'\\') {
            return None;
        }
        p.ws();
        p.eat(b':')?;
        p.ws();
        let (start, spaces) = (p.i, p.spaces);
        p.value(1)?;
        visit(Member {
            key,
            value: &text[start..p.i],
            start,
            compact: p.spaces == spaces,
        })
    })?;
    // Trailing bytes, whitespace included, are left to SQLite.
    (p.i == text.len()).then_some(())
}

/// A JSON integer (`-?(0|[1-9][0-9]*)`, no fraction or exponent) that fits
/// an i64: what `CAST(json_extract(…) AS INTEGER)` reads as itself.
pub(crate) fn plain_int(v: &[u8]) -> Option<i64> {
    let digits = v.strip_prefix(b"-").unwrap_or(v);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A strict RFC 8259 recogniser over bytes.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    /// How many whitespace bytes were skipped so far.
    spaces: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
            self.spaces += 1;
        }
    }

    /// A string; returns its bytes between the quotes, as written.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            self.skip_plain();
            match self.next()? {
                b'"' => return Some(&self.s[start..self.i - 1]),
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        for _ in 0..4 {
                            if !self.next()?.is_ascii_hexdigit() {
                                return None;
                            }
                        }
                    }
                    _ => return None,
                },
                c if c < 0x20 => return None,
                _ => {}
            }
        }
    }

    /// Skips string bytes that need no look, eight at a time: stops at the
    /// first 8 bytes holding a quote, a backslash or a control character
    /// (the word tests below have no false negatives; a false positive only
    /// means those bytes are looked at one by one).
    fn skip_plain(&mut self) {
        const ONES: u64 = u64::from_le_bytes([1; 8]);
        const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
        let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        while let Some(word) = self
            .s
            .get(self.i..self.i + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
        {
            let v = u64::from_le_bytes(word);
            let special = has_zero(v ^ (ONES * u64::from(b'"')))
                | has_zero(v ^ (ONES * u64::from(b'\\')))
                | (v.wrapping_sub(ONES * 0x20) & !v & HIGH);
            if special != 0 {
                return;
            }
            self.i += 8;
        }
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.members(b'}', |p| {
                p.string()?;
                p.ws();
                p.eat(b':')?;
                p.ws();
                p.value(depth + 1)
            }),
            b'[' => self.members(b']', |p| p.value(depth + 1)),
            b'"' => self.string().map(|_| ()),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            _ => self.number(),
        }
    }

    /// An object's or array's members, from its opening byte to `close`
    /// (each read by `member`, whitespace around it skipped).
    fn members(
        &mut self,
        close: u8,
        mut member: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.i += 1;
        self.ws();
        if self.peek() == Some(close) {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            member(self)?;
            self.ws();
            match self.next()? {
                b',' => continue,
                c if c == close => return Some(()),
                _ => return None,
            }
        }
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        let end = self.i.checked_add(w.len())?;
        (self.s.get(self.i..end)? == w).then(|| self.i = end)
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }
}
