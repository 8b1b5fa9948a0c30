//! A small JSON reader that keeps byte spans, for text already known to be
//! valid JSON (checked with `serde_json` first). It never panics on other
//! input; it answers errors instead.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    /// A string; the span includes both quotes.
    Str,
    /// A number, `true`, `false` or `null`.
    Scalar,
    /// `{` or `[`.
    Open,
    /// `}` or `]`.
    Close,
    /// `:` or `,`.
    Punct,
}

/// One token and its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: Tok,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

fn ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// End (after the closing quote) of the string starting at `b[start]`.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut j = start + 1;
    loop {
        match *b.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// All tokens in order.
pub(crate) fn tokens(b: &[u8]) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if ws(c) {
            i += 1;
            continue;
        }
        let (kind, end) = match c {
            b'"' => (Tok::Str, string_end(b, i).ok_or("unterminated string")?),
            b'{' | b'[' => (Tok::Open, i + 1),
            b'}' | b']' => (Tok::Close, i + 1),
            b':' | b',' => (Tok::Punct, i + 1),
            _ => {
                let mut j = i;
                while j < b.len() && !ws(b[j]) && !matches!(b[j], b',' | b':' | b']' | b'}') {
                    j += 1;
                }
                (Tok::Scalar, j)
            }
        };
        out.push(Token {
            kind,
            start: i,
            end,
        });
        i = end;
    }
    Ok(out)
}

/// Unit boundaries inside a string's content: an escape (`\n` two bytes,
/// `\uXXXX` six), a UTF-8 character (one to four bytes). Returns unit
/// start offsets relative to `content`.
pub(crate) fn unit_starts(content: &[u8]) -> Vec<usize> {
    let mut starts = Vec::with_capacity(content.len());
    let mut i = 0;
    while i < content.len() {
        starts.push(i);
        i += match content[i] {
            b'\\' if content.get(i + 1) == Some(&b'u') => 6,
            b'\\' => 2,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        };
    }
    starts
}

/// A parsed value with spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    /// String, number or literal.
    Scalar { start: usize, end: usize },
    /// An array.
    Array {
        start: usize,
        end: usize,
        items: Vec<Node>,
    },
    /// An object: (key span with quotes, value).
    Object {
        start: usize,
        end: usize,
        members: Vec<((usize, usize), Node)>,
    },
}

impl Node {
    pub(crate) fn span(&self) -> (usize, usize) {
        match self {
            Node::Scalar { start, end }
            | Node::Array { start, end, .. }
            | Node::Object { start, end, .. } => (*start, *end),
        }
    }
}

const MAX_DEPTH: usize = 256;

/// Parse one JSON value into spans.
pub(crate) fn parse(b: &[u8]) -> Result<Node, String> {
    let toks = tokens(b)?;
    let mut pos = 0;
    let node = value(b, &toks, &mut pos, 0)?;
    if pos != toks.len() {
        return Err("trailing data after the JSON value".into());
    }
    Ok(node)
}

fn value(b: &[u8], toks: &[Token], pos: &mut usize, depth: usize) -> Result<Node, String> {
    if depth > MAX_DEPTH {
        return Err("JSON nested too deeply".into());
    }
    let t = *toks.get(*pos).ok_or("unexpected end of JSON")?;
    *pos += 1;
    match t.kind {
        Tok::Str | Tok::Scalar => Ok(Node::Scalar {
            start: t.start,
            end: t.end,
        }),
        Tok::Open if b.get(t.start) == Some(&b'[') => {
            let mut items = Vec::new();
            loop {
                let next = toks.get(*pos).ok_or("unterminated array")?;
                if next.kind == Tok::Close {
                    *pos += 1;
                    return Ok(Node::Array {
                        start: t.start,
                        end: next.end,
                        items,
                    });
                }
                if !items.is_empty() {
                    expect(toks, pos, Tok::Punct)?;
                }
                items.push(value(b, toks, pos, depth + 1)?);
            }
        }
        Tok::Open => {
            let mut members = Vec::new();
            loop {
                let next = toks.get(*pos).ok_or("unterminated object")?;
                if next.kind == Tok::Close {
                    *pos += 1;
                    return Ok(Node::Object {
                        start: t.start,
                        end: next.end,
                        members,
                    });
                }
                if !members.is_empty() {
                    expect(toks, pos, Tok::Punct)?;
                }
                let key = expect(toks, pos, Tok::Str)?;
                expect(toks, pos, Tok::Punct)?;
                let v = value(b, toks, pos, depth + 1)?;
                members.push(((key.start, key.end), v));
            }
        }
        Tok::Close | Tok::Punct => Err(format!("unexpected token at byte {}", t.start)),
    }
}

fn expect(toks: &[Token], pos: &mut usize, kind: Tok) -> Result<Token, String> {
    let t = *toks.get(*pos).ok_or("unexpected end of JSON")?;
    if t.kind != kind {
        return Err(format!("unexpected token at byte {}", t.start));
    }
    *pos += 1;
    Ok(t)
}

/// Whether `b` is one valid JSON document.
pub(crate) fn valid(b: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_units() {
        let b = br#"{"a\"b": [1, -2.5e3, true], "c": null}"#;
        let toks = tokens(b).unwrap();
        let kinds: Vec<Tok> = toks.iter().map(|t| t.kind).collect();
        assert_eq!(kinds[..4], [Tok::Open, Tok::Str, Tok::Punct, Tok::Open]);
        assert_eq!(&b[toks[1].start..toks[1].end], br#""a\"b""#);
        assert_eq!(&b[toks[6].start..toks[6].end], b"-2.5e3");
        assert_eq!(unit_starts(br"a\nb\u00e9c"), vec![0, 1, 3, 4, 10]);
        assert_eq!(unit_starts("aé✓b".as_bytes()), vec![0, 1, 3, 6]);
    }

    #[test]
    fn parses_spans() {
        let b = br#" {"x": {"y": [1, {"z": "w"}]}, "v": 2} "#;
        let node = parse(b).unwrap();
        let Node::Object { members, .. } = &node else {
            panic!("object expected")
        };
        assert_eq!(members.len(), 2);
        let (s, e) = members[0].1.span();
        assert_eq!(&b[s..e], br#"{"y": [1, {"z": "w"}]}"#);
        assert!(parse(b"[1,").is_err());
        assert!(parse(b"{\"a\" 1}").is_err());
    }
}
