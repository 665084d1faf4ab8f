//! Container logs as `kubectl logs` shows them, from the files the runtime
//! writes in the CRI format (`<RFC 3339 time> <stdout|stderr> <P|F>
//! <message>`, one per line, a long line split into partial `P` pieces
//! ended by an `F`): the messages joined back, with the kubelet's options
//! `timestamps`, `sinceSeconds`/`sinceTime` and `limitBytes`; for
//! `tailLines`, [`tail_offset`] finds where the last N lines begin, a line
//! joined from pieces counted once.
//!
//! [`LogRender`] takes the file's bytes in any pieces and writes what the
//! client sees; it holds at most one unfinished line. A line that is not
//! in the CRI format is passed through as it is, as the kubelet does.

/// What the client asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Prefix each line with its RFC 3339 time.
    pub timestamps: bool,
    /// Only lines written at or after this Unix time (milliseconds).
    pub since_ms: Option<u64>,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<usize>,
}

/// One parsed CRI log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriLine<'a> {
    /// The RFC 3339 time as written.
    pub time: &'a str,
    /// Its Unix time in milliseconds, if it parses.
    pub time_ms: Option<u64>,
    pub stderr: bool,
    /// A piece of a longer line (`P`); the line ends at an `F`.
    pub partial: bool,
    pub message: &'a [u8],
}

/// Parses one line without its `\n`; `None` when it is not CRI format.
pub fn parse_line(line: &[u8]) -> Option<CriLine<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stderr = match parts.next()? {
        b"stdout" => false,
        b"stderr" => true,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(CriLine {
        time,
        time_ms: parse_time_ms(time),
        stderr,
        partial,
        message: parts.next().unwrap_or_default(),
    })
}

/// RFC 3339 with any fraction (the runtime writes nanoseconds).
fn parse_time_ms(time: &str) -> Option<u64> {
    let (whole, rest) = time
        .split_once('.')
        .unwrap_or((time.trim_end_matches('Z'), ""));
    let seconds = clock::parse_rfc3339(&format!("{}Z", whole.trim_end_matches('Z')))?;
    let digits: String = rest
        .chars()
        .take_while(char::is_ascii_digit)
        .take(3)
        .collect();
    let millis = format!("{digits:0<3}").parse::<u64>().ok()?;
    Some(seconds + millis)
}

/// Where, in `bytes` (the end of a log file; its start when `whole`),
/// the last `lines` lines begin, counting a line joined from partial
/// pieces once and leaving out an unfinished last line. `None` when
/// `bytes` reach back too little to tell: read more of the file.
pub fn tail_offset(bytes: &[u8], whole: bool, lines: usize) -> Option<usize> {
    // The complete lines, each with its offset (without its `\n`).
    let mut spans = Vec::new();
    let mut start = if whole {
        0
    } else {
        bytes.iter().position(|&b| b == b'\n')? + 1
    };
    while let Some(i) = bytes[start..].iter().position(|&b| b == b'\n') {
        spans.push((start, &bytes[start..start + i]));
        start += i + 1;
    }
    let partial = |line: &[u8]| parse_line(line).is_some_and(|l| l.partial);
    if lines == 0 {
        return Some(start);
    }
    let mut seen = 0;
    for i in (0..spans.len()).rev() {
        let begins = match i {
            0 if whole => true,
            0 => return None,
            _ => !partial(spans[i - 1].1),
        };
        if begins {
            seen += 1;
            if seen == lines {
                return Some(spans[i].0);
            }
        }
    }
    if whole { Some(0) } else { None }
}

/// Turns CRI log bytes into what `kubectl logs` prints.
#[derive(Debug)]
pub struct LogRender {
    options: LogOptions,
    /// Bytes of a line not yet ended by `\n`.
    unfinished: Vec<u8>,
    /// Inside a line joined from partial pieces: whether it is shown.
    joining: Option<bool>,
    written: usize,
}

/// Longest unfinished line held; a longer one is cut there.
const MAX_LINE: usize = 1 << 20;

impl LogRender {
    pub fn new(options: LogOptions) -> Self {
        Self {
            options,
            unfinished: Vec::new(),
            joining: None,
            written: 0,
        }
    }

    /// Whether `limitBytes` has been reached: nothing more will be written.
    pub fn is_full(&self) -> bool {
        self.options.limit_bytes.is_some_and(|l| self.written >= l)
    }

    /// Renders the file bytes `data` into `out`.
    pub fn handle_bytes(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !data.is_empty() && !self.is_full() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    if self.unfinished.is_empty() {
                        self.line(&data[..i], out);
                    } else {
                        let mut line = std::mem::take(&mut self.unfinished);
                        line.extend_from_slice(&data[..i]);
                        self.line(&line, out);
                    }
                    data = &data[i + 1..];
                }
                None => {
                    let room = MAX_LINE.saturating_sub(self.unfinished.len());
                    self.unfinished
                        .extend_from_slice(&data[..data.len().min(room)]);
                    return;
                }
            }
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let Some(l) = parse_line(line) else {
            let mut whole = line.to_vec();
            whole.push(b'\n');
            return self.emit(&whole, out);
        };
        // The first piece of a line decides whether it is shown, and its
        // time is the line's.
        let first = self.joining.is_none();
        let shown = *self.joining.get_or_insert_with(|| {
            let since = self.options.since_ms.unwrap_or(0);
            l.time_ms.is_none_or(|t| t >= since)
        });
        if !l.partial {
            self.joining = None;
        }
        if !shown {
            return;
        }
        let mut piece = Vec::with_capacity(l.message.len() + 40);
        if self.options.timestamps && first {
            piece.extend_from_slice(l.time.as_bytes());
            piece.push(b' ');
        }
        piece.extend_from_slice(l.message);
        if !l.partial {
            piece.push(b'\n');
        }
        self.emit(&piece, out);
    }

    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let take = match self.options.limit_bytes {
            Some(limit) => bytes.len().min(limit.saturating_sub(self.written)),
            None => bytes.len(),
        };
        out.extend_from_slice(&bytes[..take]);
        self.written += take;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(options: LogOptions, file: &str) -> String {
        // Fed in every split, the output is the same.
        let mut whole = Vec::new();
        LogRender::new(options.clone()).handle_bytes(file.as_bytes(), &mut whole);
        for at in 0..file.len() {
            let mut r = LogRender::new(options.clone());
            let mut out = Vec::new();
            r.handle_bytes(&file.as_bytes()[..at], &mut out);
            r.handle_bytes(&file.as_bytes()[at..], &mut out);
            assert_eq!(out, whole, "split at {at}");
        }
        String::from_utf8(whole).unwrap()
    }

    const FILE: &str = "2026-12-04T10:00:00.123456789Z stdout F hello\n\
                        2026-12-04T10:00:01.5Z stderr P long \n\
                        2026-12-04T10:00:02Z stderr F line\n\
                        2026-12-04T10:00:03.000000001Z stdout F \n\
                        2026-12-04T10:00:04Z stdout F bye\n";

    #[test]
    fn messages_are_joined_from_their_pieces() {
        assert_eq!(
            render(LogOptions::default(), FILE),
            "hello\nlong line\n\nbye\n"
        );
        let l = parse_line(b"2026-12-04T10:00:01.5Z stderr P long ").unwrap();
        assert!(l.stderr && l.partial);
        assert_eq!(l.message, b"long ");
        assert_eq!(
            l.time_ms,
            Some(clock::parse_rfc3339("2026-12-04T10:00:01Z").unwrap() + 500)
        );
    }

    #[test]
    fn timestamps_since_and_limit_bytes() {
        let ts = LogOptions {
            timestamps: true,
            ..LogOptions::default()
        };
        assert_eq!(
            render(ts, FILE),
            "2026-12-04T10:00:00.123456789Z hello\n2026-12-04T10:00:01.5Z long line\n\
             2026-12-04T10:00:03.000000001Z \n2026-12-04T10:00:04Z bye\n"
        );
        let t = |s| clock::parse_rfc3339(s).unwrap();
        // A line is in when its first piece is: "long line" starts at 01.5.
        let since = |ms| LogOptions {
            since_ms: Some(ms),
            ..LogOptions::default()
        };
        assert_eq!(
            render(since(t("2026-12-04T10:00:01Z")), FILE),
            "long line\n\nbye\n"
        );
        assert_eq!(render(since(t("2026-12-04T10:00:02Z")), FILE), "\nbye\n");
        let limit = LogOptions {
            limit_bytes: Some(8),
            ..LogOptions::default()
        };
        assert_eq!(render(limit, FILE), "hello\nlo");
    }

    #[test]
    fn tails_count_joined_lines_once() {
        let f = FILE.as_bytes();
        let from = |lines| tail_offset(f, true, lines).map(|o| &FILE[o..]);
        assert_eq!(from(0), Some(""));
        assert_eq!(from(1), Some("2026-12-04T10:00:04Z stdout F bye\n"));
        // "long line" is two pieces, one line.
        let three = render(LogOptions::default(), from(3).unwrap());
        assert_eq!(three, "long line\n\nbye\n");
        assert_eq!(from(4), Some(FILE));
        assert_eq!(from(40), Some(FILE));
        // Cut in the middle of the file: told when it cannot say.
        let cut = &f[50..];
        assert_eq!(
            tail_offset(cut, false, 1).map(|o| o + 50),
            tail_offset(f, true, 1)
        );
        assert_eq!(tail_offset(cut, false, 9), None);
        assert_eq!(tail_offset(b"no newline yet", false, 1), None);
        // An unfinished last line is not counted.
        let unfinished = "t stdout F a\nt stdout F b\nt stdout F c-in-progre";
        let o = tail_offset(unfinished.as_bytes(), true, 1).unwrap();
        assert_eq!(&unfinished[o..], "t stdout F b\nt stdout F c-in-progre");
    }

    #[test]
    fn lines_not_in_the_cri_format_pass_through() {
        assert_eq!(
            render(LogOptions::default(), "plain text\n\nx y\n"),
            "plain text\n\nx y\n"
        );
        for bad in [
            &b""[..],
            b"2026 stdout",
            b"t stdin F x",
            b"t stdout X x",
            b"\xff\xfe stdout F x",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
        // An unfinished line is held, bounded, until its end arrives.
        let mut r = LogRender::new(LogOptions::default());
        let mut out = Vec::new();
        r.handle_bytes(&vec![b'a'; MAX_LINE + 10], &mut out);
        assert!(out.is_empty());
        r.handle_bytes(b"\n", &mut out);
        assert_eq!(out.len(), MAX_LINE + 1);
    }
}
