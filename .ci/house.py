#!/usr/bin/env python3
"""The house rules CI checks on crates' source:

  house.py loops CRATE_SRC...      no two modules import each other (unless one
                                   is inside the other)
  house.py functions MAX SRC...    no function is longer than MAX lines

Both read the code as text (comments and string literals blanked first).
"""
import os
import re
import sys


def rust_files(src):
    for root, _, files in os.walk(src):
        for f in sorted(files):
            if f.endswith('.rs'):
                yield os.path.join(root, f)


def blank(text):
    """Blanks comments, strings and chars, keeping lines and braces of code."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith('//', i):
            j = text.find('\n', i)
            j = n if j < 0 else j
            i = j
        elif text.startswith('/*', i):
            j = text.find('*/', i + 2)
            j = n if j < 0 else j + 2
            out.append('\n' * text.count('\n', i, j))
            i = j
        elif c == 'r' and re.match(r'r#*"', text[i:i + 10]) and not (i and (text[i - 1].isalnum() or text[i - 1] == '_')):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + '\n' * text.count('\n', i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == '\\' else 1
            out.append('""' + '\n' * text.count('\n', i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]) or re.match(r"'\\u\{[0-9a-fA-F]+\}'", text[i:i + 12]):
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            out.append("' '")
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return ''.join(out)


def module_of(src, path):
    parts = os.path.relpath(path, src)[:-3].split(os.sep)
    if parts[-1] in ('mod', 'lib', 'main'):
        parts = parts[:-1]
    return tuple(parts)


def loops(src):
    files = {module_of(src, p): p for p in rust_files(src)}

    def resolve(path):
        path = tuple(path)
        while path and path not in files:
            path = path[:-1]
        return path

    edges = set()
    for m, f in files.items():
        text = blank(open(f).read())
        text = re.split(r'#\[cfg\(test\)\]\s*mod tests\s*\{', text)[0]
        own_dir = os.path.basename(f) in ('mod.rs', 'lib.rs', 'main.rs')
        here = list(m) if own_dir else list(m[:-1])
        for head, rest in re.findall(r'\b(crate|super)((?:::\w+)+)', text):
            rest = [x for x in rest.split('::') if x]
            base = [] if head == 'crate' else list(here)
            while rest and rest[0] == 'super':
                rest.pop(0)
                base = base[:-1]
            if head == 'super':
                base = base[:-1] if own_dir else base
            edges.add((m, resolve(base + rest)))
        for head, names in re.findall(r'\b(crate|super)::\{([^}]*)\}', text):
            base = [] if head == 'crate' else (list(m[:-1]) if own_dir else list(here))
            for name in re.findall(r'(\w+)', names):
                edges.add((m, resolve(base + [name])))
    edges = {(a, b) for a, b in edges if a != b}

    def inside(a, b):
        return b[:len(a)] == a or a[:len(b)] == b

    bad = sorted({tuple(sorted(e)) for e in edges if (e[1], e[0]) in edges and not inside(*e)})
    name = lambda m: '::'.join(m) or 'crate'
    return [f'{src}: {name(a)} and {name(b)} import each other' for a, b in bad]


def functions(limit, src):
    found = []
    for f in rust_files(src):
        text = blank(open(f).read())
        for m in re.finditer(r'\bfn\s+(\w+)[^;{]*\{', text):
            depth, i = 1, m.end()
            while depth and i < len(text):
                depth += {'{': 1, '}': -1}.get(text[i], 0)
                i += 1
            start = text.count('\n', 0, m.start()) + 1
            lines = text.count('\n', m.start(), i) + 1
            if lines > limit:
                found.append(f'{f}:{start}: fn {m.group(1)} is {lines} lines (at most {limit})')
    return found


def main(argv):
    if len(argv) >= 2 and argv[0] == 'loops':
        problems = [p for src in argv[1:] for p in loops(src)]
    elif len(argv) >= 3 and argv[0] == 'functions':
        problems = [p for src in argv[2:] for p in functions(int(argv[1]), src)]
    else:
        sys.exit(__doc__)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
