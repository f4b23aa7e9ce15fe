"""The boot sector the test installer writes to block 0 of the machine's disk.

Anaconda installs a boot loader; the test installer installs this instead, so
that a machine told to boot from its disk really does, and says so: the
BIOS loads block 0, this code reads block 1 (the install marker, one line)
with the BIOS disk service and prints it on the console (which QEMU's
``-nographic`` firmware mirrors to the serial port), then halts::

    provisiond-lab: booting the installed system from disk
    PROVISIOND-INSTALLED serial=SN-... kickstart=... bytes=... time=...

Writes the 512 bytes (code, a message, the 0x55AA signature) to stdout or
to the file named by the first argument. 16-bit real mode, assembled by
hand below (offsets in the comments); no assembler needed.
"""

from __future__ import annotations

import sys

BANNER = b"\r\nprovisiond-lab: booting the installed system from disk\r\n\0"
FAILED = b"provisiond-lab: cannot read block 1 of the disk\r\n\0"
CRLF = b"\r\n\0"

CODE_SIZE = 0x50  # messages start here
BASE = 0x7C00  # where the BIOS loads block 0
BUFFER = 0x7E00  # where block 1 is read to


def build() -> bytes:
    banner = BASE + CODE_SIZE
    failed = banner + len(BANNER)
    crlf = failed + len(FAILED)
    drive = BASE + 0x1FD  # byte 509 of this sector, in memory: the boot drive the BIOS passed in DL

    def word(value: int) -> bytes:
        return (value & 0xFFFF).to_bytes(2, "little")

    def call(at: int) -> bytes:  # E8 rel16, relative to the next instruction
        return b"\xE8" + word(PRINT - (at + 3))

    PRINT = 0x3D  # the print routine: SI -> console, up to a NUL
    code = b"".join([
        b"\xFA",                         # 00 cli
        b"\x31\xC0",                     # 01 xor ax, ax
        b"\x8E\xD8\x8E\xC0\x8E\xD0",     # 03 mov ds, ax; mov es, ax; mov ss, ax
        b"\xBC" + word(BASE),            # 09 mov sp, 0x7C00
        b"\xFB",                         # 0C sti
        b"\x88\x16" + word(drive),       # 0D mov [drive], dl
        b"\xBE" + word(banner),          # 11 mov si, banner
        call(0x14),                      # 14 call print
        b"\xB8\x01\x02",                 # 17 mov ax, 0x0201   (BIOS disk service: read 1 sector)
        b"\xB9\x02\x00",                 # 1A mov cx, 0x0002   (cylinder 0, sector 2: block 1)
        b"\x8A\x16" + word(drive),       # 1D mov dl, [drive]
        b"\x30\xF6",                     # 21 xor dh, dh       (head 0)
        b"\xBB" + word(BUFFER),          # 23 mov bx, 0x7E00   (ES:BX, the buffer)
        b"\xCD\x13",                     # 26 int 0x13
        b"\xBE" + word(failed),          # 28 mov si, failed
        b"\x72\x03",                     # 2B jc 30            (read failed: print that)
        b"\xBE" + word(BUFFER),          # 2D mov si, 0x7E00
        call(0x30),                      # 30 call print       (block 1: the marker line, NUL-padded)
        b"\xBE" + word(crlf),            # 33 mov si, crlf
        call(0x36),                      # 36 call print
        b"\xFB\xF4",                     # 39 sti; 3A hlt      (interrupts on: the firmware's
        b"\xEB\xFD",                     # 3B jmp 3A            timer flushes its serial mirror)
        b"\xAC",                         # 3D print: lodsb
        b"\x84\xC0",                     # 3E test al, al
        b"\x74\x08",                     # 40 jz 4A
        b"\xB4\x0E",                     # 42 mov ah, 0x0E     (BIOS video: teletype output)
        b"\x31\xDB",                     # 44 xor bx, bx
        b"\xCD\x10",                     # 46 int 0x10
        b"\xEB\xF3",                     # 48 jmp 3D
        b"\xC3",                         # 4A ret
    ])
    assert len(code) == 0x4B <= CODE_SIZE
    messages = BANNER + FAILED + CRLF
    assert CODE_SIZE + len(messages) <= 0x1FD
    sector = bytearray(512)
    sector[:len(code)] = code
    sector[CODE_SIZE:CODE_SIZE + len(messages)] = messages
    sector[0x1FE:0x200] = b"\x55\xAA"
    return bytes(sector)


if __name__ == "__main__":
    data = build()
    if len(sys.argv) > 1:
        with open(sys.argv[1], "wb") as out:
            out.write(data)
    else:
        sys.stdout.buffer.write(data)
