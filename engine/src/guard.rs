//! A structural check of JSON text before it is parsed: nesting depth and
//! duplicate keys.
//!
//! `serde_json` keeps the last of two equal keys in a map (`record`,
//! entity attributes …) and only refuses duplicates of a struct's own
//! fields; two readers of the same document could then see different
//! values. It also recurses once per nesting level (128 at most). This pass
//! runs first, without recursion, and refuses both with the path of the
//! offending key, so a request means one thing to every reader and a deep
//! document costs one linear scan.
//!
//! Not a validator: malformed JSON is left to the parser that follows (it
//! names the syntax error); this pass only stops at what it understands.

use std::borrow::Cow;
use std::collections::HashSet;

/// Deepest nesting of objects and arrays accepted in a request or a
/// bundle's JSON file.
pub const MAX_JSON_DEPTH: usize = 64;

/// What the check found: the dotted path of the offending place and what
/// is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path (`context.record.Name`, `files`, `[3].attrs.x`); empty
    /// for the document itself.
    pub path: String,
    /// What was found.
    pub message: String,
    /// The problem is a limit exceeded (depth), not a malformed document.
    pub limit: bool,
}

enum Frame<'a> {
    Object {
        keys: Keys<'a>,
        /// Path segment of the key whose value is being read.
        current: Option<Cow<'a, str>>,
    },
    Array {
        index: usize,
    },
}

/// The keys of one object so far: a list while short (most objects have a
/// handful of keys; no hashing, no allocation per key unless it has an
/// escape), a hash set past that so a huge object stays linear.
enum Keys<'a> {
    Few(Vec<Cow<'a, str>>),
    Many(HashSet<Cow<'a, str>>),
}

const FEW_KEYS: usize = 16;

impl<'a> Keys<'a> {
    fn contains(&self, key: &str) -> bool {
        match self {
            Keys::Few(v) => v.iter().any(|k| k == key),
            Keys::Many(h) => h.contains(key),
        }
    }

    fn insert(&mut self, key: Cow<'a, str>) {
        match self {
            Keys::Few(v) if v.len() < FEW_KEYS => v.push(key),
            Keys::Few(v) => {
                let mut h: HashSet<Cow<'a, str>> = v.drain(..).collect();
                h.insert(key);
                *self = Keys::Many(h);
            }
            Keys::Many(h) => {
                h.insert(key);
            }
        }
    }
}

/// Check `text`: at most `max_depth` levels, no object with a key twice.
pub fn check(text: &str, max_depth: usize) -> Result<(), Problem> {
    let bytes = text.as_bytes();
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'{' | b'[' => {
                if stack.len() >= max_depth {
                    return Err(Problem {
                        path: outer_path(&stack),
                        message: format!("JSON nests deeper than the limit of {max_depth} levels"),
                        limit: true,
                    });
                }
                stack.push(if b == b'{' {
                    Frame::Object {
                        keys: Keys::Few(Vec::new()),
                        current: None,
                    }
                } else {
                    Frame::Array { index: 0 }
                });
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                i += 1;
            }
            b',' => {
                match stack.last_mut() {
                    Some(Frame::Array { index }) => *index += 1,
                    Some(Frame::Object { current, .. }) => *current = None,
                    None => {}
                }
                i += 1;
            }
            b'"' => {
                let Some((end, escaped)) = string_end(bytes, i) else {
                    return Ok(()); // unterminated: the parser says so
                };
                let is_key = matches!(stack.last(), Some(Frame::Object { current: None, .. }))
                    && next_non_space(bytes, end) == Some(b':');
                if is_key {
                    let raw = text.get(i + 1..end - 1).unwrap_or("");
                    let key: Cow<'_, str> = if escaped {
                        Cow::Owned(
                            serde_json::from_str::<String>(text.get(i..end).unwrap_or("\"\""))
                                .unwrap_or_else(|_| raw.to_string()),
                        )
                    } else {
                        Cow::Borrowed(raw)
                    };
                    // The path is built only for the error (it was built
                    // for every key, most of this pass's cost).
                    if matches!(stack.last(), Some(Frame::Object { keys, .. }) if keys.contains(&key))
                    {
                        return Err(Problem {
                            path: join(&path(&stack), &key),
                            message: format!(
                                "duplicate key `{}`: a key may appear once in an object",
                                crate::request::truncate(&key)
                            ),
                            limit: false,
                        });
                    }
                    if let Some(Frame::Object { keys, current }) = stack.last_mut() {
                        keys.insert(key.clone());
                        *current = Some(key);
                    }
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// One past the closing quote of the string starting at `start`, and
/// whether it holds an escape.
fn string_end(bytes: &[u8], start: usize) -> Option<(usize, bool)> {
    let mut i = start + 1;
    let mut escaped = false;
    loop {
        match bytes.get(i)? {
            b'\\' => {
                escaped = true;
                i += 2;
            }
            b'"' => return Some((i + 1, escaped)),
            _ => i += 1,
        }
    }
}

fn next_non_space(bytes: &[u8], mut i: usize) -> Option<u8> {
    while let Some(&b) = bytes.get(i) {
        if !b.is_ascii_whitespace() {
            return Some(b);
        }
        i += 1;
    }
    None
}

fn path(stack: &[Frame]) -> String {
    let mut out = String::new();
    for f in stack {
        match f {
            Frame::Object {
                current: Some(k), ..
            } => out = join(&out, k),
            Frame::Object { current: None, .. } => {}
            Frame::Array { index } => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// The path of a nesting too deep, as far as it names fields: its leading
/// object keys (at most eight), where the runaway nesting begins.
fn outer_path(stack: &[Frame]) -> String {
    let mut out = String::new();
    for f in stack.iter().take(8) {
        match f {
            Frame::Object {
                current: Some(k), ..
            } => out = join(&out, k),
            _ => break,
        }
    }
    out
}

fn join(path: &str, key: &str) -> String {
    let key = crate::request::truncate(key);
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_found_past_the_short_key_list() {
        // More keys than the list holds: the check goes on in a hash set.
        for dup in [0, super::FEW_KEYS - 1, super::FEW_KEYS, 3 * super::FEW_KEYS] {
            let mut keys: Vec<String> = (0..4 * super::FEW_KEYS)
                .map(|i| format!("\"k{i}\": {i}"))
                .collect();
            keys.push(format!("\"k{dup}\": 0"));
            let text = format!("{{\"o\": {{{}}}}}", keys.join(", "));
            let e = check(&text, 64).err();
            assert_eq!(
                e.map(|e| e.path),
                Some(format!("o.k{dup}")),
                "duplicate k{dup}"
            );
            keys.pop();
            assert_eq!(check(&format!("{{{}}}", keys.join(", ")), 64), Ok(()));
        }
    }

    #[test]
    fn duplicate_keys_are_named_with_their_path() {
        let e = check(r#"{"a": {"b": 1, "c": [ {"x": 1, "x": 2} ]}}"#, 64).err();
        assert_eq!(
            e.map(|e| (e.path, e.message.contains("duplicate key `x`"))),
            Some(("a.c[0].x".to_string(), true))
        );
        // Escapes are decoded before comparing: "\u0061" is "a".
        let e = check(r#"{"a": 1, "\u0061": 2}"#, 64).err();
        assert_eq!(e.map(|e| e.path), Some("a".to_string()));
        // Equal keys in different objects, and values equal to keys, are fine.
        assert_eq!(
            check(r#"{"a": {"a": "a"}, "b": [{"a": 1}, {"a": 2}]}"#, 64),
            Ok(())
        );
        // Strings holding braces, quotes and colons are skipped whole.
        assert_eq!(
            check(r#"{"a": "{\"a\": 1, \"a\": 2}", "b": ":"}"#, 64),
            Ok(())
        );
    }

    #[test]
    fn depth_is_bounded_without_recursion() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = check(&deep, 64).err();
        assert_eq!(
            e.map(|e| (e.path, e.message.contains("64 levels"))),
            Some((String::new(), true))
        );
        let deep = format!(r#"{{"a":{{"b":{}{}}}}}"#, "[".repeat(100), "]".repeat(100));
        assert_eq!(check(&deep, 64).map_err(|e| e.path), Err("a.b".to_string()));
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(check(&ok, 64), Ok(()));
        let over = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(check(&over, 64).is_err());
    }

    #[test]
    fn malformed_text_is_left_to_the_parser() {
        for t in ["", "{", "{\"a", "\"", "}}}]]]", "{\"a\":\"\\"] {
            let _ = check(t, 64);
        }
    }
}

/// The hierarchy of `entities.json` before Cedar computes its closure
/// (which recurses once per level and keeps every ancestor of every
/// entity): a chain of parents longer than `max_depth`, or a cycle, is
/// refused naming the entity where it was found. Text that is not an
/// entity list is left to Cedar, which names the problem.
pub fn entity_hierarchy(text: &str, max_depth: usize) -> Result<(), Problem> {
    use std::collections::HashMap;
    fn uid(v: &serde_json::Value) -> Option<(String, String)> {
        let v = v.get("__entity").unwrap_or(v);
        Some((
            v.get("type")?.as_str()?.to_string(),
            v.get("id")?.as_str()?.to_string(),
        ))
    }
    let Ok(serde_json::Value::Array(list)) = serde_json::from_str::<serde_json::Value>(text) else {
        return Ok(());
    };
    let mut parents: HashMap<(String, String), Vec<(String, String)>> = HashMap::new();
    for e in &list {
        let Some(id) = e.get("uid").and_then(uid) else {
            continue;
        };
        let ps = e
            .get("parents")
            .and_then(|p| p.as_array())
            .map(|a| a.iter().filter_map(uid).collect())
            .unwrap_or_default();
        parents.entry(id).or_default().extend::<Vec<_>>(ps);
    }
    let name = |(t, i): &(String, String)| format!("{t}::{i:?}");
    // Longest chain above each entity, iteratively (post-order), with the
    // entities on the current path marked to find cycles.
    let mut depth: HashMap<&(String, String), usize> = HashMap::new();
    let mut on_path: std::collections::HashSet<&(String, String)> = Default::default();
    for start in parents.keys() {
        if depth.contains_key(start) {
            continue;
        }
        let mut stack: Vec<(&(String, String), usize)> = vec![(start, 0)];
        on_path.insert(start);
        while let Some((node, next)) = stack.pop() {
            let ps = parents.get(node).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(p) = ps.get(next) {
                stack.push((node, next + 1));
                if on_path.contains(p) {
                    return Err(Problem {
                        path: name(node),
                        message: format!(
                            "the entity hierarchy has a cycle: `{}` is its own ancestor (through `{}`)",
                            name(p),
                            name(node)
                        ),
                        limit: false,
                    });
                }
                if !depth.contains_key(p) {
                    if stack.len() > max_depth {
                        return Err(Problem {
                            path: name(start),
                            message: format!(
                                "`{}` has a chain of parents deeper than the limit of {max_depth}",
                                name(start)
                            ),
                            limit: true,
                        });
                    }
                    on_path.insert(p);
                    stack.push((p, 0));
                }
                continue;
            }
            let d = 1 + ps
                .iter()
                .filter_map(|p| depth.get(p))
                .max()
                .copied()
                .unwrap_or(0);
            if d > max_depth {
                return Err(Problem {
                    path: name(node),
                    message: format!(
                        "`{}` has a chain of parents deeper than the limit of {max_depth}",
                        name(node)
                    ),
                    limit: true,
                });
            }
            on_path.remove(node);
            depth.insert(node, d);
        }
    }
    Ok(())
}

#[cfg(test)]
mod hierarchy_tests {
    use super::*;

    fn chain(n: usize, cycle: bool) -> String {
        let mut v = Vec::new();
        for i in 0..n {
            let parents = if i + 1 < n {
                format!(r#"[{{"type":"G","id":"g{}"}}]"#, i + 1)
            } else if cycle {
                r#"[{"type":"G","id":"g0"}]"#.to_string()
            } else {
                "[]".to_string()
            };
            v.push(format!(
                r#"{{"uid":{{"type":"G","id":"g{i}"}},"attrs":{{}},"parents":{parents}}}"#
            ));
        }
        format!("[{}]", v.join(","))
    }

    #[test]
    fn chains_up_to_the_limit_pass_and_longer_ones_are_named() {
        assert_eq!(entity_hierarchy(&chain(64, false), 64), Ok(()));
        let e = entity_hierarchy(&chain(65, false), 64).err();
        assert!(e.is_some_and(|e| e.message.contains("limit of 64")));
        // Deep enough to overflow a recursive walk: refused, no recursion.
        assert!(entity_hierarchy(&chain(200_000, false), 64).is_err());
    }

    #[test]
    fn cycles_are_named() {
        let e = entity_hierarchy(&chain(3, true), 64).err();
        assert!(e.is_some_and(|e| e.message.contains("cycle")));
        let selfloop =
            r#"[{"uid":{"type":"G","id":"a"},"attrs":{},"parents":[{"type":"G","id":"a"}]}]"#;
        assert!(entity_hierarchy(selfloop, 64).is_err());
        // A diamond is not a cycle.
        let diamond = r#"[{"uid":{"type":"G","id":"a"},"attrs":{},"parents":[{"type":"G","id":"b"},{"type":"G","id":"c"}]},
            {"uid":{"type":"G","id":"b"},"attrs":{},"parents":[{"type":"G","id":"d"}]},
            {"uid":{"type":"G","id":"c"},"attrs":{},"parents":[{"type":"G","id":"d"}]},
            {"uid":{"type":"G","id":"d"},"attrs":{},"parents":[]}]"#;
        assert_eq!(entity_hierarchy(diamond, 64), Ok(()));
    }
}

/// Deepest nesting of brackets in a policy or schema file.
pub const MAX_CEDAR_NESTING: usize = 32;
/// Largest estimated expression depth of one policy (see [`cedar`]).
pub const MAX_CEDAR_DEPTH: usize = 320;

/// Policy or schema text that Cedar could not parse, validate or evaluate
/// without running out of stack: Cedar's parser, typechecker and evaluator
/// recurse once per level of the expression tree, and the guest has a
/// stack of 1 MiB (natively, 200 000 nested parentheses abort the process;
/// in the guest 200 already trap). Checked lexically before Cedar sees the
/// text: brackets (`(`, `[`, `{`, and `<` in schemas) nest at most
/// [`MAX_CEDAR_NESTING`] deep, and a policy's estimated tree depth (the
/// operators on each bracket level along the deepest path, a chain of
/// `&&` or `.` being as deep as it is long, plus ten per bracket for the
/// grammar's levels) stays under [`MAX_CEDAR_DEPTH`]. Answers the byte
/// offset of the first excess and what it is.
pub fn cedar(text: &str, schema: bool) -> Result<(), (usize, String)> {
    let bytes = text.as_bytes();
    // Operators counted on each open bracket level (level 0: outside).
    let mut levels: Vec<usize> = vec![0];
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let next = bytes.get(i + 1).copied();
        match b {
            b'/' if next == Some(b'/') => {
                while bytes.get(i).is_some_and(|c| *c != b'\n') {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    match c {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b'(' | b'[' | b'{' => levels.push(0),
            b'<' if schema => levels.push(0),
            // An unmatched closer at the top level changes nothing.
            #[allow(clippy::collapsible_match)]
            b')' | b']' | b'}' => {
                if levels.len() > 1 {
                    levels.pop();
                }
            }
            #[allow(clippy::collapsible_match)]
            b'>' if schema => {
                if levels.len() > 1 {
                    levels.pop();
                }
            }
            b',' => {
                // Elements of a list or record are separate subtrees.
                if let Some(l) = levels.last_mut() {
                    *l = 0;
                }
            }
            b';' if levels.len() == 1 => {
                if let Some(l) = levels.first_mut() {
                    *l = 0;
                }
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let start = i;
                while bytes
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                {
                    i += 1;
                }
                let word = text.get(start..i).unwrap_or("");
                if !schema && ["in", "has", "like", "is", "if", "then", "else"].contains(&word) {
                    if let Some(l) = levels.last_mut() {
                        *l += 1;
                    }
                    check_depth(&levels, start)?;
                }
                continue;
            }
            _ if !schema => {
                let op = match (b, next) {
                    (b'&', Some(b'&')) | (b'|', Some(b'|')) | (b'=', Some(b'=')) => 2,
                    (b'!', Some(b'=')) | (b'<', Some(b'=')) | (b'>', Some(b'=')) => 2,
                    (b'<' | b'>' | b'+' | b'-' | b'*' | b'.' | b'!', _) => 1,
                    _ => 0,
                };
                if op > 0 {
                    if let Some(l) = levels.last_mut() {
                        *l += 1;
                    }
                    check_depth(&levels, i)?;
                    i += op;
                    continue;
                }
            }
            _ => {}
        }
        if levels.len() - 1 > MAX_CEDAR_NESTING {
            return Err((
                i,
                format!("brackets nest deeper than the limit of {MAX_CEDAR_NESTING} levels"),
            ));
        }
        i += 1;
    }
    Ok(())
}

/// The estimated expression depth along the open brackets (see [`cedar`]).
fn check_depth(levels: &[usize], at: usize) -> Result<(), (usize, String)> {
    let depth: usize = levels.iter().sum::<usize>() + 10 * levels.len().saturating_sub(1);
    if depth > MAX_CEDAR_DEPTH {
        return Err((
            at,
            format!(
                "the expression here is too deep to evaluate safely (an estimated {depth} levels, over the limit of {MAX_CEDAR_DEPTH}): split the condition into several policies or shorter chains"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod cedar_tests {
    use super::*;

    fn policy(body: &str) -> String {
        format!("@id(\"x\")\npermit (principal, action, resource) when {{ {body} }};\n")
    }

    #[test]
    fn ordinary_policies_pass() {
        for p in [
            "context.lockout.account_ip.stage == \"challenge\" || context.lockout.account.stage == \"throttle\"",
            "principal in Crm::Role::\"admin\" && context.token.scopes.contains(\"full\") && resource.console",
            "if context has ip then context.ip.isInRange(ip(\"10.0.0.0/8\")) else false",
            "[\"a\", \"b\", \"c\"].contains(context.module)",
        ] {
            assert_eq!(cedar(&policy(p), false), Ok(()), "{p}");
        }
        // A long list is wide, not deep.
        let list: Vec<String> = (0..5000).map(|i| format!("context.x{i}.y")).collect();
        assert_eq!(
            cedar(&policy(&format!("[{}].isEmpty()", list.join(", "))), false),
            Ok(())
        );
        // Strings and comments are not code.
        let s = format!(
            "// {}\ncontext.module == \"{}\"",
            "((((".repeat(100),
            "&&&&((((".repeat(100)
        );
        assert_eq!(cedar(&policy(&s), false), Ok(()));
    }

    #[test]
    fn deep_shapes_are_refused_with_their_offset() {
        let n = 200_000;
        for body in [
            format!("{}true{}", "(".repeat(n), ")".repeat(n)),
            format!("{}]] == []", "[".repeat(n)),
            vec!["true"; 2000].join(" && "),
            format!("context{} == 1", ".x".repeat(2000)),
            format!(
                "{}true{}",
                "if true then ".repeat(2000),
                " else false".repeat(2000)
            ),
            format!("{} == 1", vec!["1"; 2000].join(" + ")),
        ] {
            let e = cedar(&policy(&body), false);
            assert!(
                e.as_ref().is_err_and(|(off, _)| *off > 0),
                "{}",
                &body[..40]
            );
        }
        let deep_type = format!(
            "entity E = {{ a: {}Long{} }};",
            "Set<".repeat(100),
            ">".repeat(100)
        );
        assert!(cedar(&deep_type, true).is_err());
        assert_eq!(cedar("entity E = { a: Set<Set<Long>> };", true), Ok(()));
    }
}

/// Deepest flow nesting (`[` and `{`) in a YAML case file.
pub const MAX_YAML_NESTING: usize = 64;

/// YAML flow collections nested too deep: the YAML parser's work grows with
/// the square of the nesting (200 KB of `[` took 21 s natively, and timed
/// out in the guest). Brackets inside quoted scalars and comments do not
/// count. Answers the byte offset of the first excess.
pub fn yaml(text: &str) -> Result<(), (usize, String)> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let prev = if i == 0 {
            b'\n'
        } else {
            bytes.get(i - 1).copied().unwrap_or(b'\n')
        };
        // Where a quoted scalar or a comment may begin.
        let boundary =
            prev.is_ascii_whitespace() || matches!(prev, b'[' | b'{' | b',' | b':' | b'-');
        match b {
            b'#' if prev.is_ascii_whitespace() => {
                while bytes.get(i).is_some_and(|c| *c != b'\n') {
                    i += 1;
                }
                continue;
            }
            b'\'' if boundary => {
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    if c == b'\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'"' if boundary => {
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    match c {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_YAML_NESTING {
                    return Err((
                        i,
                        format!(
                            "flow collections nest deeper than the limit of {MAX_YAML_NESTING} levels"
                        ),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod yaml_tests {
    use super::*;

    #[test]
    fn deep_flow_yaml_is_refused_and_quoted_brackets_are_not_counted() {
        let deep = format!(
            "cases:\n  - name: a\n    request: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(yaml(&deep).is_err_and(|(off, _)| off > 20));
        let quoted = format!(
            "cases:\n  - name: \"it's [ok\" # a comment [[[[\n    request: '{}'\n    other: \"{}\"\n",
            "[".repeat(500),
            "{".repeat(500)
        );
        assert_eq!(yaml(&quoted), Ok(()));
        let ok =
            "cases:\n  - name: the victim's address\n    request: {context: {fields: [a, b]}}\n";
        assert_eq!(yaml(ok), Ok(()));
    }
}
