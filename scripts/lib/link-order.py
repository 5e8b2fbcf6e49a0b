#!/usr/bin/env python3
"""Writes the symbols of the functions a run executed, for `cli/link-order.txt`.

    link-order.py MAP BINARY CALLGRIND_OUT... [--samples PERF_SCRIPT...]

MAP is the linker's map of the binary (LLD's format: VMA, LMA, size, alignment, input section).
Code is compiled one function to a section, named `.text.` (or `.text.unlikely.`, ...) and the
function's mangled symbol: the symbol is read from the section's name (the map's own symbol
lines are demangled). Each CALLGRIND_OUT is a dump of
`valgrind --tool=callgrind --dump-instr=yes --compress-pos=no --compress-strings=no` of that
binary (stripped: callgrind then names functions by address, relative to where the binary was
loaded, which is the map's VMA for a position-independent binary). Every code section one of
the dumps executed is named by its symbol, sorted (a stable, reviewable list; the order within
the list matters little, its membership does). Fails if the dumps and the map do not match
(more than a tenth of the executed addresses fall outside the map's code).

Each PERF_SCRIPT is the text of `perf script --show-mmap-events -F ip` over a native run of
the same binary, sampled: it adds what callgrind cannot see, the code a CPU feature selects at
run time that valgrind's emulated CPU lacks (SHA-256 by SHA-NI, for one).
"""

import bisect
import subprocess
import sys


# Prefixes the compilers give a function's section by its temperature or role.
SECTION_KINDS = ("unlikely.", "hot.", "startup.", "exit.", "split.")


def function_symbol(section):
    """The symbol of a one-function code section (`.text.unlikely.foo` -> `foo`), or None
    for a shared `.text` (assembly, C compiled without function sections)."""
    name = section[len(".text."):] if section.startswith(".text.") else ""
    for kind in SECTION_KINDS:
        if name.startswith(kind):
            name = name[len(kind):]
            break
    return name or None


def code_sections(map_path):
    """(start, size, symbol or None) of every input code section, by address."""
    sections = []
    with open(map_path) as lines:
        for line in lines:
            fields = line.split(None, 4)
            if len(fields) < 5 or ":(.text" not in fields[4]:
                continue
            try:
                start, size = int(fields[0], 16), int(fields[2], 16)
            except ValueError:
                continue  # the header
            section = fields[4].strip().rsplit(":(", 1)[1].rstrip(")")
            if size:
                sections.append((start, size, function_symbol(section)))
    sections.sort()
    return sections


def executed_addresses(dump_path, binary_path):
    """Addresses of the binary's code the dump saw executed (function entries and
    instructions), relative to its load address."""
    seen = set()
    in_binary = False
    with open(dump_path) as lines:
        for line in lines:
            if line.startswith("ob="):
                in_binary = line[3:].strip() == binary_path
            elif in_binary and (line.startswith("0x") or line.startswith("fn=0x")):
                token = line[3:] if line.startswith("fn=") else line
                seen.add(int(token.split()[0].split("'")[0], 16))
    return seen


def code_segment_delta(binary_path):
    """Address minus file offset of the binary's code segment (from its program headers)."""
    headers = subprocess.run(["readelf", "-lW", binary_path], check=True,
                             capture_output=True, text=True).stdout
    for line in headers.splitlines():
        fields = line.split()
        if fields[:1] == ["LOAD"] and "E" in fields[6:-1]:
            return int(fields[2], 16) - int(fields[1], 16)
    sys.exit(f"{binary_path} has no code segment")


def sampled_addresses(script_path, binary_path):
    """Sampled addresses of the binary's code in a native run, as the map's addresses. perf
    reports the code's mapping (start, file offset): an address there is the file offset plus
    the code segment's distance between address and offset."""
    delta = code_segment_delta(binary_path)
    suffix = " r-xp " + binary_path
    seen = set()
    mapping = None  # (start, length, file offset)
    with open(script_path) as lines:
        for line in lines:
            if "PERF_RECORD_MMAP" in line:
                if line.rstrip().endswith(suffix):
                    start, rest = line.split("[0x", 1)[1].split("(0x", 1)
                    length, rest = rest.split(")", 1)
                    offset = rest.split("@ 0x", 1)[1].split()[0]
                    mapping = (int(start, 16), int(length, 16), int(offset, 16))
                continue
            fields = line.split()
            if mapping is not None and len(fields) == 1:
                try:
                    address = int(fields[0], 16)
                except ValueError:
                    continue
                start, length, offset = mapping
                if start <= address < start + length:
                    seen.add(address - start + offset + delta)
    return seen


def main(argv):
    if len(argv) < 4:
        sys.exit(__doc__)
    args = argv[3:]
    split = args.index("--samples") if "--samples" in args else len(args)
    map_path, binary_path, dumps, samples = argv[1], argv[2], args[:split], args[split + 1:]
    sections = code_sections(map_path)
    starts = [start for start, _, _ in sections]
    addresses = set()
    for dump in dumps:
        addresses |= executed_addresses(dump, binary_path)
    for script in samples:
        addresses |= sampled_addresses(script, binary_path)
    executed, outside = set(), 0
    for address in addresses:
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and address < sections[i][0] + sections[i][1]:
            executed.add(i)
        else:
            outside += 1
    if not addresses or outside > len(addresses) // 10:
        sys.exit(f"{outside} of {len(addresses)} executed addresses are not in the map's code: "
                 "is the map of this binary?")
    symbols = sorted({sections[i][2] for i in executed if sections[i][2]})
    size = sum(sections[i][1] for i in executed)
    total = sum(size for _, size, _ in sections)
    print(f"{len(executed)} of {len(sections)} code sections executed: "
          f"{size // 1024} of {total // 1024} KiB", file=sys.stderr)
    sys.stdout.write("".join(name + "\n" for name in symbols))


if __name__ == "__main__":
    main(sys.argv)
