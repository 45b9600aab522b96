"""The simulated receiver's RDSS card: BeiDou short messages (protocol 2.1 `$CCTXA` / BDS-3 `$CCTCQ`),
the card's service interval, its communication level and the `$BDFKI` feedback it writes. The
receiver simulator (`simulator.py`) owns one and feeds it the host's sentences."""

from __future__ import annotations

import dataclasses
import math

from tianwang.drivers.beidou import nmea_writer as w

# RDSS message capacity by communication level (bits of content per message), as the cards enforce
LEVEL_BITS = {1: 110, 2: 408, 3: 628, 4: 848}
# protocol 2.1 `$BDFKI` suppression indicator values this card writes (vendor documents differ; this
# is the common reading): 0 none, 1 transmission inhibited, 2 radio silence
SUPPRESSION_INHIBITED = 1
SUPPRESSION_SILENT = 2
# BDS-3 `$BDFKI` reasons
REASON_INTERVAL, REASON_SUPPRESSED, REASON_SILENT, REASON_POWER, REASON_NO_CARD, REASON_NO_PERMISSION = range(1, 7)


@dataclasses.dataclass
class SentMessage:
    """A message the card accepted for transmission."""

    dest: str
    encoding: int  # 0 GB2312, 1 code, 2 mixed
    content: bytes
    time_ns: int
    command: str  # TXA or TCQ


class RdssCard:
    """The RDSS side of a BeiDou terminal: answers the host's sentences, enforces the service interval.

    protocol    "2.1" (`$CCTXA` sends, `$BDFKI,TXA,...` feedback) or "bds3" (`$CCTCQ`,
                `$BDFKI,hhmmss,TCQ,...`). Card queries are answered in both: `$CCICA` with `$BDICI`,
                `$CCICR` with `$BDICP`. A send in the other protocol gets no answer (the module
                does not know the sentence), as with a real terminal.
    interval_s  the card's service interval: a send less than this after the last accepted one is
                refused with the remaining wait (`$BDFKI,TXA,N,N,0,mmss` / reason 1 and seconds).
    Flags tests set: present (card inserted), suppressed, silent (radio silence), permitted,
    power_locked, mute (answer nothing, to make a host time out).
    """

    def __init__(
        self,
        protocol: str = "2.1",
        card_id: str = "0245678",
        interval_s: int = 60,
        level: int = 3,
        serial: str = "02097151",
        broadcast_id: str = "0000011",
        user_class: int = 6,
    ):
        if protocol not in ("2.1", "bds3"):
            raise ValueError(f"protocol must be '2.1' or 'bds3', not {protocol!r}")
        if not (card_id.isdigit() and len(card_id) == 7):
            raise ValueError(f"a card id is 7 digits, not {card_id!r}")
        if level not in LEVEL_BITS:
            raise ValueError(f"level must be 1-4, not {level!r}")
        if interval_s < 0:
            raise ValueError("interval_s must not be negative")
        self.protocol = protocol
        self.card_id = card_id
        self.interval_s = int(interval_s)
        self.level = level
        self.serial = serial
        self.broadcast_id = broadcast_id
        self.user_class = user_class
        self.present = True
        self.suppressed = False
        self.silent = False
        self.permitted = True
        self.power_locked = True
        self.mute = False
        self.last_send_ns: int | None = None
        self.sent: list[SentMessage] = []
        self.refusals: list[tuple[str, int]] = []  # (reason, remaining s) of every refused send

    def remaining_s(self, now_ns: int) -> int:
        """Seconds before the card will accept the next send (0 = now)."""
        if self.last_send_ns is None:
            return 0
        left = self.interval_s - (now_ns - self.last_send_ns) / 1e9
        return max(0, math.ceil(left - 1e-9))

    # -- host sentences -------------------------------------------------------------------------
    def handle(self, address: str, fields: tuple[str, ...], now_ns: int) -> list[bytes]:
        """The card's answer to one host sentence (`CCTXA`, `CCTCQ`, `CCICA`, `CCICR`); [] when it
        does not answer (unknown sentence, wrong protocol, mute)."""
        if self.mute:
            return []
        if address == "CCICA":
            return [self._card_info("ICI", "ICA", now_ns)]
        if address == "CCICR":
            return [self._card_info("ICP", "ICR", now_ns)]
        if address == "CCTXA" and self.protocol == "2.1":
            return [self._send_21(fields, now_ns)]
        if address == "CCTCQ" and self.protocol == "bds3":
            return [self._send_bds3(fields, now_ns)]
        return []

    def _card_info(self, formatter: str, command: str, now_ns: int) -> bytes:
        if not self.present:
            if self.protocol == "bds3":
                return w.fki_bds3(now_ns, command, False, REASON_NO_CARD, 0)
            return w.fki_21(command, False)
        return w.ici(
            self.card_id,
            self.serial,
            self.broadcast_id,
            self.user_class,
            self.interval_s,
            self.level,
            False,
            0,
            formatter=formatter,
        )

    def _content(self, hex_text: str) -> bytes | None:
        try:
            content = bytes.fromhex(hex_text)
        except ValueError:
            return None
        if not content or len(content) * 8 > LEVEL_BITS[self.level]:
            return None
        return content

    def _send_21(self, fields: tuple[str, ...], now_ns: int) -> bytes:
        # $CCTXA,dest(7 digits),1,mode,content-hex
        def refuse(reason: str, wait: int = 0, interval_ok: bool = True, suppression: int = 0) -> bytes:
            self.refusals.append((reason, wait))
            return w.fki_21("TXA", False, interval_ok, suppression, wait)

        if not self.present or not self.permitted:
            return refuse("no_card" if not self.present else "no_permission")
        if self.suppressed:
            return refuse("suppressed", suppression=SUPPRESSION_INHIBITED)
        if self.silent:
            return refuse("silent", suppression=SUPPRESSION_SILENT)
        wait = self.remaining_s(now_ns)
        if wait:
            return refuse("interval_not_reached", wait, interval_ok=False)
        if len(fields) != 4 or not (len(fields[0]) == 7 and fields[0].isdigit()) or fields[2] not in ("0", "1", "2"):
            return refuse("bad_command")
        content = self._content(fields[3])
        if content is None:
            return refuse("bad_content")
        self._accept(fields[0], int(fields[2]), content, now_ns, "TXA")
        return w.fki_21("TXA", True, True, 0, self.interval_s)

    def _send_bds3(self, fields: tuple[str, ...], now_ns: int) -> bytes:
        # $CCTCQ,dest,freq,ack,encoding,hex,interval
        def refuse(reason_name: str, code: int, wait: int = 0) -> bytes:
            self.refusals.append((reason_name, wait))
            return w.fki_bds3(now_ns, "TCQ", False, code, wait)

        if not self.present:
            return refuse("no_card", REASON_NO_CARD)
        if not self.permitted:
            return refuse("no_permission", REASON_NO_PERMISSION)
        if not self.power_locked:
            return refuse("power_unlocked", REASON_POWER)
        if self.suppressed:
            return refuse("suppressed", REASON_SUPPRESSED)
        if self.silent:
            return refuse("silent", REASON_SILENT)
        wait = self.remaining_s(now_ns)
        if wait:
            return refuse("interval_not_reached", REASON_INTERVAL, wait)
        if len(fields) != 6 or not fields[0].isdigit() or fields[3] not in ("0", "1", "2"):
            return refuse("bad_command", 0)
        content = self._content(fields[4])
        if content is None:
            return refuse("bad_content", 0)
        self._accept(fields[0], int(fields[3]), content, now_ns, "TCQ")
        return w.fki_bds3(now_ns, "TCQ", True, 0, self.interval_s)

    def _accept(self, dest: str, encoding: int, content: bytes, now_ns: int, command: str) -> None:
        self.last_send_ns = now_ns
        self.sent.append(SentMessage(dest, encoding, content, now_ns, command))

    # -- what the card says unasked -------------------------------------------------------------
    def beams(self, now_ns: int, blocked: bool = False) -> bytes:
        """`$BDPWI` beam status: ten RDSS beams and three S2C beams, power 0-4."""
        sec = now_ns // 1_000_000_000
        rdss2 = [(b, 0 if blocked else (4 if (b + sec // 7) % 3 else 3)) for b in range(1, 11)]
        s2c = [(b, 0 if blocked else 3) for b in range(1, 4)] if self.protocol == "bds3" else []
        return w.pwi(now_ns, rdss2, s2c)

    def received(self, sender: str, content: bytes, encoding: int, now_ns: int, kind: int = 1) -> bytes:
        """The sentence announcing a message received from `sender`."""
        if self.protocol == "bds3":
            return w.tci(sender, self.card_id, content, encoding, send_time=w.fmt_time(now_ns, 0))
        return w.txr(sender, content, encoding, kind, send_time=w.fmt_time(now_ns, 0)[:4])
