"""Writes gbt20999_poll.bin: what one GB/T 20999 controller sent its host during a polling session.

It is laid out byte by byte here, with its own bit-at-a-time CRC and escaping, so the capture does
not depend on the code it tests. Run from the repository root: `python tests/captures/signal/make_capture.py`.
See gbt20999_poll.md for what is in it.
"""

from pathlib import Path

HERE = Path(__file__).parent
CONTROLLER = 0x00000203  # controller id
OTHER = 0x00000207  # a second controller on the same RS-485 line


def crc(data):
    reg = 0
    for byte in data:
        for bit in range(7, -1, -1):
            top = (reg >> 15) ^ ((byte >> bit) & 1)
            reg = (reg << 1) & 0xFFFF
            if top:
                reg ^= 0x1005  # GB/T 20999 CRC-16
    return reg


def frame(content):
    n = len(content) + 4  # length field, content, CRC
    body = (n - 2).to_bytes(2, "big") + content  # majority: the field holds N - 2
    body += crc(body).to_bytes(2, "big")
    out = bytearray(b"\x7e")
    for b in body:
        if b in (0x7E, 0x7D, 0x5C):
            out.append(0x5C)
        out.append(b)
    out.append(0x7D)
    return bytes(out)


def message(frame_type, seq, values, controller=CONTROLLER, count=True):
    head = b"\x01\x01" + b"\x01" + controller.to_bytes(4, "big") + b"\x05" + bytes((seq, frame_type))
    if not count:
        return head
    out = bytearray(head + bytes((len(values),)))
    for i, (cls, obj, attr, elem, value) in enumerate(values, 1):
        out += bytes((i, len(value) + 4, cls, obj, attr, elem)) + value
    return bytes(out)


def date(year, month, day, hour, minute, second):
    return year.to_bytes(2, "big") + bytes((month, day, hour, minute, second))


RED, GREEN, YELLOW, YELLOW_FLASH, OFF = 0x10, 0x20, 0x30, 0x31, 0x01


def status_reply(seq, lamps, mode, plan, stage, stage_state, elapsed, remaining, clock):
    return message(
        0x20,
        seq,
        [
            (3, 3, 2, 0, bytes(lamps)),  # every lamp group, element 0
            (13, 2, 2, 0, bytes((mode,))),
            (13, 2, 3, 0, bytes((plan,))),
            (13, 2, 4, 0, bytes((stage,))),
            (6, 3, 2, stage, bytes((stage_state,))),
            (6, 3, 3, stage, elapsed.to_bytes(2, "big")),
            (6, 3, 4, stage, remaining.to_bytes(2, "big")),
            (13, 1, 10, 0, clock),  # the controller's UTC clock
        ],
    )


def main():
    parts = []
    # power-up garbage on the line before the first frame
    parts.append(b"\x00\xff\x00\xf8")
    # heartbeat reply, this vendor with a value count of 0 (the majority sends none)
    parts.append(frame(message(0x80, 1, [])))
    # 1 Hz status polls: 8 lamp groups, local fixed-time (0x21), plan 3, stage 1 running
    ns_green = [GREEN, GREEN, RED, RED, GREEN, GREEN, RED, RED]
    parts.append(frame(status_reply(2, ns_green, 0x21, 3, 1, 0x20, 12, 23, date(2024, 6, 10, 6, 13, 20))))
    # elapsed 125 (0x7D) and remaining 92 (0x5C): both need escaping
    parts.append(frame(status_reply(3, ns_green, 0x21, 3, 1, 0x20, 125, 92, date(2024, 6, 10, 6, 13, 21))))
    # a reply hit by line noise: one bit of a lamp state flipped, CRC no longer matches
    hit = bytearray(frame(status_reply(4, ns_green, 0x21, 3, 1, 0x20, 126, 91, date(2024, 6, 10, 6, 13, 22))))
    hit[20] ^= 0x04
    parts.append(bytes(hit))
    # yellow for the north-south groups
    ns_yellow = [YELLOW, YELLOW, RED, RED, YELLOW, YELLOW, RED, RED]
    parts.append(frame(status_reply(5, ns_yellow, 0x21, 3, 1, 0x30, 127, 2, date(2024, 6, 10, 6, 13, 23))))
    # the controller restarts its reply mid-frame; the stump ends in a 0x5C escape byte
    stump = frame(status_reply(6, ns_yellow, 0x21, 3, 1, 0x30, 128, 92, date(2024, 6, 10, 6, 13, 24)))
    cut = stump.index(b"\x5c\x5c") + 1
    parts.append(stump[:cut])
    # stage 2, east-west green, and the plan changes to 4 at the same time
    ew_green = [RED, RED, GREEN, GREEN, RED, RED, GREEN, GREEN]
    parts.append(frame(status_reply(6, ew_green, 0x21, 4, 2, 0x20, 1, 29, date(2024, 6, 10, 6, 13, 25))))
    # a reply from the other controller on the shared line
    parts.append(
        frame(
            status_reply(6, ew_green, 0x21, 4, 2, 0x20, 1, 29, date(2024, 6, 10, 6, 13, 25)).replace(
                CONTROLLER.to_bytes(4, "big"), OTHER.to_bytes(4, "big")
            )
        )
    )
    # an active report: detector data (5.3.1 presence, detector 4) and traffic data (14.1.1 volume)
    parts.append(
        frame(
            message(
                0x60,
                7,
                [
                    (5, 3, 1, 4, b"\x01"),
                    (14, 1, 1, 4, (612).to_bytes(2, "big")),
                    (14, 1, 2, 4, bytes((37,))),
                ],
            )
        )
    )
    # a conflict-monitor fault: type 2, at 14:13:26 local time, action 1 (yellow flash)
    parts.append(frame(message(0x60, 8, [(16, 1, 0, 1, b"\x02" + date(2024, 6, 10, 14, 13, 26) + b"\x01")])))
    # ...so the controller goes to yellow flash
    flash = [YELLOW_FLASH] * 8
    parts.append(
        frame(
            message(
                0x60,
                9,
                [
                    (13, 2, 2, 0, bytes((0x31,))),
                    (3, 3, 2, 0, bytes(flash)),
                ],
            )
        )
    )
    # a cabinet door alarm: type 5, at 14:13:30 local time, value 1 (open)
    parts.append(frame(message(0x60, 10, [(15, 1, 0, 1, b"\x05" + date(2024, 6, 10, 14, 13, 30) + b"\x01")])))
    # the host asked for 1.9.1, which this controller does not have: query error "does not exist"
    parts.append(frame(message(0x21, 11, [(1, 9, 1, 0, b"\x30")])))
    # a value whose length byte runs past the frame: a well-framed but malformed message
    # (plan 13.2.3: its length byte says 9, five more value bytes than the frame holds)
    parts.append(frame(message(0x20, 12, [], count=False) + b"\x01" + b"\x01\x09\x0d\x02\x03\x00\x04"))
    # the host's own query echoed back by a line driver
    parts.append(frame(message(0x10, 13, [(3, 3, 2, 0, b"")])))
    # heartbeat reply, then the line goes quiet in the middle of a frame
    parts.append(frame(message(0x80, 14, [])))
    parts.append(frame(message(0x80, 15, []))[:6])
    (HERE / "gbt20999_poll.bin").write_bytes(b"".join(parts))


if __name__ == "__main__":
    main()
