"""The uplinks of a config: started after the devices, reloaded with them, stopped before them."""

from __future__ import annotations

import logging
from typing import Any

from tianwang.gateway.uplink.uplink import Uplink

log = logging.getLogger("tianwang.uplink")


class Uplinks:
    def __init__(self, app):
        self.app = app
        self.running: dict[str, Uplink] = {}

    async def apply(self, config) -> dict:
        """Start new uplinks, stop removed ones, restart changed ones; the unchanged ones tell
        their superiors' catalog subscriptions what the reload added, removed or changed."""
        wanted = {u.id: u for u in config.uplinks if u.enabled}
        changes: dict[str, Any] = {"started": [], "stopped": [], "notified": {}}
        for uid in [i for i in self.running if i not in wanted or self.running[i].cfg != wanted[i]]:
            await self.running.pop(uid).stop("removed from config" if uid not in wanted else "config changed")
            changes["stopped"].append(uid)
        for uid, cfg in wanted.items():
            if uid in self.running:
                changes["notified"][uid] = self.running[uid].requests.catalog_changed()
                continue
            uplink = Uplink(self.app, cfg)
            try:
                await uplink.start()
            except ValueError as exc:
                log.error("uplink %s: %s", uid, exc)
                continue
            self.running[uid] = uplink
            changes["started"].append(uid)
        return changes

    async def stop(self) -> None:
        for uid in list(self.running):
            await self.running.pop(uid).stop("gateway stopping")

    def get(self, uid: str) -> Uplink | None:
        return self.running.get(uid)
