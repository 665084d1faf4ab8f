//! Arbitrary bytes as a container's CRI log file, as `kubectl logs` reads
//! it: the renderer writes at most what it was given (plus the newlines
//! of joined lines and the timestamps asked for) and respects limitBytes;
//! the tail finder returns an offset inside the bytes; nothing panics.
#![no_main]

use edged::logs::{LogOptions, LogRender, tail_offset};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, file)) = data.split_first() else {
        return;
    };
    let limit = (flags & 0x0f) as usize * 7;
    let options = LogOptions {
        timestamps: flags & 0x10 != 0,
        since_ms: (flags & 0x20 != 0).then_some(1_796_083_200_000),
        limit_bytes: (flags & 0x40 != 0).then_some(limit),
    };
    let mut render = LogRender::new(options.clone());
    let mut out = Vec::new();
    let split = file.len() / 2;
    render.handle_bytes(&file[..split], &mut out);
    render.handle_bytes(&file[split..], &mut out);
    if let Some(limit) = options.limit_bytes {
        assert!(out.len() <= limit);
    }
    if !options.timestamps {
        assert!(out.len() <= file.len() + 1);
    }
    for lines in [0, 1, 3] {
        for whole in [true, false] {
            if let Some(at) = tail_offset(file, whole, lines) {
                assert!(at <= file.len());
            }
        }
    }
});
