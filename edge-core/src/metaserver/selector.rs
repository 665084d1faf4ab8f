//! Label and field selectors (`labelSelector`, `fieldSelector`), parsed and
//! matched as the API server does: equality- and set-based label
//! requirements (`a=b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`,
//! `a>1`), and field terms (`f=v`, `f==v`, `f!=v`, `\,` `\=` `\\`
//! escapes) over the fields the API server supports for each kind; any
//! other field is refused, as the API server refuses it.

use std::borrow::Cow;

use serde_json::Value;

use schema::kinds;

/// Why a selector was refused: the API server's 400 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unable to parse requirement: {0}")]
    Label(String),
    #[error("invalid selector: '{0}'; can't understand '{1}'")]
    Field(String, String),
    #[error("field label not supported: {0}")]
    FieldNotSupported(String),
}

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Label {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    Gt(String, i64),
    Lt(String, i64),
}

/// A list or watch's selectors; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    labels: Vec<Label>,
    /// (field, value, equal): `equal` false for `!=`.
    fields: Vec<(String, String, bool)>,
}

impl Selector {
    /// Parses the two query parameters for objects of `kind`.
    pub fn parse(
        labels: Option<&str>,
        fields: Option<&str>,
        kind: &str,
    ) -> Result<Selector, SelectorError> {
        Ok(Selector {
            labels: parse_labels(labels.unwrap_or(""))?,
            fields: parse_fields(fields.unwrap_or(""), kind)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    /// Whether `object` (as served, with its status) is selected.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.labels_match(|k| labels.get(k).and_then(Value::as_str))
            && self
                .fields
                .iter()
                .all(|(f, v, equal)| (field_value(object, f) == *v) == *equal)
    }

    /// Whether a stored object (its JSON) may be selected, from its labels
    /// alone, read without building the object: a list skips the objects
    /// that cannot be before serving them. Unreadable JSON may be.
    pub fn may_match(&self, data: &[u8]) -> bool {
        #[derive(serde::Deserialize)]
        struct Object<'a> {
            #[serde(borrow, default)]
            metadata: Metadata<'a>,
        }
        #[derive(serde::Deserialize, Default)]
        struct Metadata<'a> {
            #[serde(borrow, default)]
            labels: Option<std::collections::HashMap<Cow<'a, str>, Cow<'a, str>>>,
        }
        if self.labels.is_empty() {
            return true;
        }
        let Ok(o) = serde_json::from_slice::<Object<'_>>(data) else {
            return true;
        };
        let labels = o.metadata.labels.unwrap_or_default();
        self.labels_match(|k| labels.get(k).map(|v| v.as_ref()))
    }

    fn labels_match<'v>(&self, label: impl Fn(&str) -> Option<&'v str>) -> bool {
        self.labels.iter().all(|r| match r {
            Label::In(k, vs) => label(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Label::NotIn(k, vs) => label(k).is_none_or(|v| vs.iter().all(|x| x != v)),
            Label::Exists(k) => label(k).is_some(),
            Label::DoesNotExist(k) => label(k).is_none(),
            Label::Gt(k, n) => label(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Label::Lt(k, n) => label(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        })
    }
}

/// The fields the API server selects on, beyond `metadata.name` and
/// `metadata.namespace`, for each served kind.
fn supported(kind: &str) -> &'static [&'static str] {
    match kind {
        kinds::POD => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        kinds::SECRET => &["type"],
        kinds::NODE => &["spec.unschedulable"],
        _ => &[],
    }
}

/// A field's value as the API server compares it: its string form, with
/// the default the API server would have filled in when absent.
fn field_value(object: &Value, field: &str) -> String {
    let v = field.split('.').fold(object, |v, part| &v[part]);
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => match field {
            "spec.restartPolicy" => "Always".to_owned(),
            "spec.schedulerName" => "default-scheduler".to_owned(),
            "spec.hostNetwork" | "spec.unschedulable" => "false".to_owned(),
            "status.phase" => "Pending".to_owned(),
            "type" => "Opaque".to_owned(),
            _ => String::new(),
        },
    }
}

/// Splits on `sep` where it is not escaped with a backslash.
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let (mut parts, mut start, mut escaped) = (Vec::new(), 0, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == sep => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn unescape(value: &str, whole: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                _ => {
                    return Err(SelectorError::Field(whole.to_owned(), value.to_owned()));
                }
            },
            ',' | '=' => return Err(SelectorError::Field(whole.to_owned(), value.to_owned())),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn parse_fields(s: &str, kind: &str) -> Result<Vec<(String, String, bool)>, SelectorError> {
    let mut out = Vec::new();
    if s.trim().is_empty() {
        return Ok(out);
    }
    for term in split_unescaped(s, ',') {
        // The operator that starts first wins (`a=b!=c` is `a` = `b!=c`).
        let split = term.char_indices().find_map(|(i, _)| {
            let op = ["!=", "==", "="]
                .into_iter()
                .find(|op| term[i..].starts_with(op))?;
            Some((i, op))
        });
        let Some((i, op)) = split else {
            return Err(SelectorError::Field(s.to_owned(), term.to_owned()));
        };
        let (field, value) = (term[..i].trim(), &term[i + op.len()..]);
        if field.is_empty() {
            return Err(SelectorError::Field(s.to_owned(), term.to_owned()));
        }
        let known = matches!(field, "metadata.name" | "metadata.namespace")
            || supported(kind).contains(&field);
        if !known {
            return Err(SelectorError::FieldNotSupported(field.to_owned()));
        }
        out.push((field.to_owned(), unescape(value, s)?, op != "!="));
    }
    Ok(out)
}

/// The tokens of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Not,
    NotEquals,
    Equals,
    Open,
    Close,
    Comma,
    Gt,
    Lt,
}

fn lex(s: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        chars.next();
        let next_is_eq = chars.peek() == Some(&'=');
        let token = match c {
            c if c.is_whitespace() => continue,
            '!' if next_is_eq => {
                chars.next();
                Token::NotEquals
            }
            '!' => Token::Not,
            '=' => {
                if next_is_eq {
                    chars.next();
                }
                Token::Equals
            }
            '(' => Token::Open,
            ')' => Token::Close,
            ',' => Token::Comma,
            '>' => Token::Gt,
            '<' => Token::Lt,
            c => {
                let mut word = c.to_string();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "!=(),<>".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                Token::Word(word)
            }
        };
        out.push(token);
    }
    out
}

fn parse_labels(s: &str) -> Result<Vec<Label>, SelectorError> {
    let tokens = lex(s);
    let mut p = Parser {
        tokens: &tokens,
        at: 0,
    };
    let mut out = Vec::new();
    if tokens.is_empty() {
        return Ok(out);
    }
    loop {
        out.push(p.requirement()?);
        match p.next() {
            None => return Ok(out),
            Some(Token::Comma) => {}
            Some(t) => return Err(found(t, "','")),
        }
    }
}

fn found(t: &Token, expected: &str) -> SelectorError {
    SelectorError::Label(format!("found '{t:?}', expected: {expected}"))
}

struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
}

impl Parser<'_> {
    fn next(&mut self) -> Option<&Token> {
        let t = self.tokens.get(self.at);
        self.at += 1;
        t
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn requirement(&mut self) -> Result<Label, SelectorError> {
        let negated = self.peek() == Some(&Token::Not);
        if negated {
            self.at += 1;
        }
        let key = match self.next() {
            Some(Token::Word(w)) => w.clone(),
            Some(t) => return Err(found(t, "identifier")),
            None => return Err(SelectorError::Label("missing a key".to_owned())),
        };
        check_key(&key)?;
        if negated {
            return Ok(Label::DoesNotExist(key));
        }
        if matches!(self.peek(), None | Some(Token::Comma)) {
            return Ok(Label::Exists(key));
        }
        match self.next().cloned().unwrap_or(Token::Comma) {
            Token::Equals => Ok(Label::In(key, vec![self.value()?])),
            Token::NotEquals => Ok(Label::NotIn(key, vec![self.value()?])),
            Token::Word(w) if w == "in" => Ok(Label::In(key, self.set()?)),
            Token::Word(w) if w == "notin" => Ok(Label::NotIn(key, self.set()?)),
            Token::Gt => Ok(Label::Gt(key, self.integer()?)),
            Token::Lt => Ok(Label::Lt(key, self.integer()?)),
            t => Err(found(&t, "'=', '!=', 'in', 'notin', '>', '<'")),
        }
    }

    /// One value after `=` or `!=`: empty before a comma or the end.
    fn value(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            None | Some(Token::Comma) => Ok(String::new()),
            Some(Token::Word(w)) => {
                let w = w.clone();
                self.at += 1;
                check_value(&w)?;
                Ok(w)
            }
            Some(t) => Err(found(t, "a value")),
        }
    }

    fn integer(&mut self) -> Result<i64, SelectorError> {
        match self.next() {
            Some(Token::Word(w)) => w.parse().map_err(|_| {
                SelectorError::Label(format!(
                    "for 'gt', 'lt' operators, the value must be an integer: {w}"
                ))
            }),
            _ => Err(SelectorError::Label(
                "for 'gt', 'lt' operators, exactly one value is required".to_owned(),
            )),
        }
    }

    /// `(a, b, …)` after `in` or `notin`.
    fn set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Some(Token::Open) => {}
            Some(t) => return Err(found(t, "'('")),
            None => return Err(SelectorError::Label("expected '('".to_owned())),
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                Some(Token::Word(w)) => {
                    check_value(w)?;
                    values.push(w.clone());
                }
                Some(t) => return Err(found(t, "a value")),
                None => return Err(SelectorError::Label("expected ')'".to_owned())),
            }
            match self.next() {
                Some(Token::Comma) => {}
                Some(Token::Close) => return Ok(values),
                Some(t) => return Err(found(t, "',' or ')'")),
                None => return Err(SelectorError::Label("expected ')'".to_owned())),
            }
        }
    }
}

/// A name part of a key or a value: at most 63 characters, alphanumeric
/// at both ends, `-`, `_` and `.` inside.
fn valid_name(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric();
    s.len() <= 63
        && s.chars().next().is_some_and(ok)
        && s.chars().last().is_some_and(ok)
        && s.chars().all(|c| ok(c) || "-_.".contains(c))
}

fn check_key(key: &str) -> Result<(), SelectorError> {
    let (prefix, name) = key
        .rsplit_once('/')
        .map_or((None, key), |(p, n)| (Some(p), n));
    let prefix_ok = prefix.is_none_or(|p| {
        p.len() <= 253
            && p.split('.').all(|l| {
                l.len() <= 63
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && !l.is_empty()
            })
    });
    if prefix_ok && valid_name(name) {
        Ok(())
    } else {
        Err(SelectorError::Label(format!(
            "key: Invalid value: {key:?}: a qualified name must consist of alphanumeric \
             characters, '-', '_' or '.', and must start and end with an alphanumeric \
             character, with an optional DNS subdomain prefix and '/'"
        )))
    }
}

fn check_value(value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || valid_name(value) {
        Ok(())
    } else {
        Err(SelectorError::Label(format!(
            "values[0]: Invalid value: {value:?}: a valid label must be an empty string or \
             consist of alphanumeric characters, '-', '_' or '.', and must start and end \
             with an alphanumeric character"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value, phase: &str) -> Value {
        json!({"metadata": {"name": "web-1", "namespace": "default", "labels": labels},
            "spec": {"nodeName": "edge-1", "hostNetwork": true}, "status": {"phase": phase}})
    }

    fn sel(labels: &str, fields: &str) -> Selector {
        Selector::parse(Some(labels), Some(fields), kinds::POD).unwrap()
    }

    #[test]
    fn label_selectors_match_as_the_api_servers() {
        let p = pod(json!({"app": "web", "tier": "front", "n": "5"}), "Running");
        let yes = [
            "",
            "app=web",
            "app==web",
            "app = web",
            "app!=db",
            "missing!=x",
            "app in (web,db)",
            "app notin (db)",
            "missing notin (x)",
            "app",
            "!missing",
            "app,tier=front",
            "n>3",
            "n<6",
            "app in (web), tier notin (back), !missing",
        ];
        // What a list reads before building an object agrees.
        let stored = p.to_string().into_bytes();
        for s in yes {
            assert!(sel(s, "").matches(&p), "{s:?} should select");
            assert!(sel(s, "").may_match(&stored), "{s:?} may select");
        }
        let no = [
            "app=nothing-has-this",
            "app!=web",
            "app in (db)",
            "app notin (web)",
            "missing",
            "!app",
            "missing=x",
            "n>5",
            "n<5",
            "app=web,tier=back",
            "app>1",
        ];
        for s in no {
            assert!(!sel(s, "").matches(&p), "{s:?} should not select");
            assert!(!sel(s, "").may_match(&stored), "{s:?} cannot select");
        }
        let escaped = br#"{"metadata":{"labels":{"app":"web"}}}"#;
        assert!(sel("app=web", "").may_match(escaped));
        assert!(!sel("app", "").may_match(br#"{"metadata":{}}"#));
        assert!(
            sel("app", "").may_match(b"not json"),
            "left to the full match"
        );
        assert!(sel("app=", "").matches(&pod(json!({"app": ""}), "Running")));
        assert!(!sel("app=", "").matches(&p));
        assert!(sel("example.com/role=x", "").matches(&pod(json!({"example.com/role": "x"}), "")));
    }

    #[test]
    fn field_selectors_match_the_kinds_fields_with_their_defaults() {
        let p = pod(json!({}), "Running");
        for s in [
            "metadata.name=web-1",
            "metadata.name==web-1",
            "metadata.namespace=default",
            "spec.nodeName=edge-1",
            "status.phase=Running",
            "status.phase!=Pending",
            "spec.hostNetwork=true",
            "spec.restartPolicy=Always",
            "metadata.name=web-1,status.phase=Running",
        ] {
            assert!(sel("", s).matches(&p), "{s:?} should select");
        }
        for s in [
            "metadata.name=nothing",
            "spec.nodeName=edge-2",
            "status.phase=Running,metadata.name=x",
        ] {
            assert!(!sel("", s).matches(&p), "{s:?} should not select");
        }
        let unset = json!({"metadata": {"name": "p"}});
        assert!(sel("", "status.phase=Pending").matches(&unset));
        let secret = json!({"metadata": {"name": "s"}});
        let by_type = |f| {
            Selector::parse(None, Some(f), kinds::SECRET)
                .unwrap()
                .matches(&secret)
        };
        assert!(by_type("type=Opaque"));
        assert!(!by_type("type=kubernetes.io/tls"));
        let escaped = json!({"metadata": {"name": "a,b=c\\d"}});
        assert!(sel("", r"metadata.name=a\,b\=c\\d").matches(&escaped));
    }

    #[test]
    fn unsupported_fields_and_garbage_are_refused_with_the_api_servers_words() {
        assert_eq!(
            Selector::parse(None, Some("spec.foo=x"), kinds::POD),
            Err(SelectorError::FieldNotSupported("spec.foo".into()))
        );
        assert_eq!(
            Selector::parse(None, Some("type=Opaque"), kinds::CONFIGMAP),
            Err(SelectorError::FieldNotSupported("type".into()))
        );
        let e = Selector::parse(None, Some("status.phase=Running,oops"), kinds::POD).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid selector: 'status.phase=Running,oops'; can't understand 'oops'"
        );
        for bad in [
            "app in web",
            "app in (web",
            "app in ()",
            "=web",
            "app==",
            "app=(x)",
            "a b",
            "app>x",
            "!",
            "!app=x",
            "app,",
            ",",
            "-bad=x",
            "app=-bad",
            "a/b/c=x",
            "UPPER.example/x=y",
            "in (",
            "app notin",
            "(((",
        ] {
            // `app==` is an empty value, as `app=`: accepted.
            if bad == "app==" {
                continue;
            }
            let r = Selector::parse(Some(bad), None, kinds::POD);
            assert!(r.is_err(), "{bad:?} should be refused, got {r:?}");
        }
        let long = "a".repeat(64);
        assert!(Selector::parse(Some(&format!("{long}=x")), None, kinds::POD).is_err());
        assert!(Selector::parse(Some(&format!("x={long}")), None, kinds::POD).is_err());
    }
}
