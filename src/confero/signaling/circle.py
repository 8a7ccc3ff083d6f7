"""Circle's application WebSocket, `/{App}/websocket/application`: what its server plugin answers.

Circle (Ant Media's conference app) opens this socket beside the main `/{App}/websocket` one.
On Ant Media it is served by the plugin in Circle's own repository
(`WebSocketApplicationHandler`), whose commands, in the version Circle's current client goes
with, are answered here as follows:

* `ping` → `pong` (Circle pings every 5 s and reconnects a closed socket);
* `getSettings` → `setSettings`, the exposed `ConferenceRoomSettings` as a JSON string: no room
  creation password, no recording plugin, Ant Media's default participant visibility matrix and
  `maxVideoTrackCount` -1 (Ant Media's default: no limit; Circle then uses its own 6);
* `isRoomCreationPasswordRequired` → `required: false`; `createRoomWithPassword` →
  `authenticated: false` (the plugin's answer when no password is configured);
* `sendData` → the message goes to the receiver stream's data channels (no reply, as there);
* `updateBroadcastRole` → the stream's record takes the role (no reply, as there);
* `startRecording` / `stopRecording` → a failed `Result` (Confero has no recording plugin, and
  says so in `setSettings`, so Circle hides the button);
* `syncAdministrativeFields` is ignored, as the plugin does (an older plugin answered it with
  the room's presenter lists; the current client reads nothing from the answer).

Anything else, and frames that are not JSON commands, get an `error` (Circle ignores it; the
plugin logged and dropped them). The session holds no `Client`: nothing here publishes or plays.
"""

from __future__ import annotations

import json
import logging

from aiohttp import WSMsgType, web

from confero.domain.application import Application
from confero.errors import ConferoError
from confero.signaling import circle_messages as c

logger = logging.getLogger(__name__)

#: Ant Media's default `participantVisibilityMatrix` (AppSettings.DEFAULT_VISIBILITY_MATRIX).
VISIBILITY_MATRIX = {
    "default": ["default"],
    "speaker": ["speaker", "active_attendee"],
    "attendee": ["speaker", "active_attendee"],
    "active_attendee": ["active_attendee", "speaker"],
}
NO_RECORDING = "Recording is not available: this server has no media push plugin"


class CircleSession:
    """One `/{App}/websocket/application` socket: each command answered in order, or not at all."""

    def __init__(self, ws: web.WebSocketResponse, app: Application, remote: str) -> None:
        self.ws = ws
        self.app = app
        self.remote = remote
        self.commands = 0
        self.closed = False

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    reply = await self.handle(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    reply = c.Error(definition="invalid_json", information="binary frames are not commands")
                else:
                    break
                if reply is not None and not self.ws.closed:
                    try:
                        await self.ws.send_str(c.encode(reply))
                    except (ConnectionError, RuntimeError):
                        break
        finally:
            await self.close()

    async def handle(self, text: str) -> c.Message | None:
        """The reply to one frame, or None where Circle's plugin sends none."""
        try:
            name, command = c.decode(text)
        except c.DecodeFailure as exc:
            logger.info("%s: circle: bad message: %s", self.remote, exc.information)
            return c.Error(definition=exc.definition, information=exc.information)
        self.commands += 1
        try:
            return await self._dispatch(command)
        except ConferoError as exc:
            # The plugin logs a failed sendData or role update and answers nothing.
            logger.info("%s: circle: %s refused: %s", self.remote, name, exc)
            return None

    async def _dispatch(self, command: c.Command) -> c.Message | None:
        match command:
            case c.Ping():
                return c.Pong(definition=c.result(True))
            case c.GetSettings():
                return c.SetSettings(settings=c.encode(self.settings()))
            case c.IsRoomCreationPasswordRequired():
                return c.PasswordRequired(required=False)
            case c.CreateRoomWithPassword():
                return c.RoomCreatedWithPassword(authenticated=False)
            case c.SendData(receiver_stream_id=receiver, message=message):
                await self.app.send_data(receiver, message)
                return None
            case c.UpdateBroadcastRole(stream_id=stream_id, role=role):
                await self.update_role(stream_id, role)
                return None
            case c.StartRecording():
                return c.StartRecordingResponse(definition=c.result(False, NO_RECORDING))
            case c.StopRecording():
                return c.StopRecordingResponse(definition=c.result(False, NO_RECORDING))
            case c.SyncAdministrativeFields():
                return None
        raise AssertionError(f"unhandled command {command!r}")  # pragma: no cover - COMMANDS is closed

    def settings(self) -> c.Settings:
        return c.Settings(
            room_creation_password_enabled=False,
            is_recording_feature_available=False,
            participant_visibility_matrix=json.dumps(VISIBILITY_MATRIX, separators=(",", ":")),
            max_video_track_count=-1,
        )

    async def update_role(self, stream_id: str, role: str) -> None:
        record = await self.app.streams.record(stream_id)
        if record is None:
            logger.info("%s: circle: no stream %r to give the role %r", self.remote, stream_id, role)
            return
        if record.role != role:
            record.role = role
            await self.app.streams.save(record)

    async def close(self) -> None:
        """Idempotent: the socket closes."""
        if self.closed:
            return
        self.closed = True
        await self.ws.close()

    def dump(self) -> dict[str, object]:
        return {"kind": "circle", "remote": self.remote, "commands": self.commands, "closed": self.closed}


__all__ = ["CircleSession"]
