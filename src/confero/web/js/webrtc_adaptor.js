/**
 * Confero's JavaScript SDK: `WebRTCAdaptor`, written for Confero and speaking Ant Media
 * Server's WebSocket signaling, with the same class name, options, methods and callbacks as
 * Ant Media's SDK so that pages written for it (and the conference tutorial) run unchanged.
 *
 * One self-contained ES2020 file, no imports. Load it either way:
 *
 *     import { WebRTCAdaptor } from "/WebRTCAppEE/js/webrtc_adaptor.js";   // ES module
 *     <script src="js/webrtc_adaptor.js"></script>                          // classic: globals
 *
 * The server hands classic `<script src>` requests a copy without `export` that assigns the
 * exported names (`WebRTCAdaptor`, `getUrlParameter`) to `globalThis`.
 *
 * Conventions:
 *  - every event goes to `callback(info, obj)`; every failure goes to `callbackError(error, obj)`
 *    where `obj` has at least a `message` (or is the server's `error` message itself);
 *  - methods returning a Promise resolve `false` on failure after reporting it to callbackError
 *    (they never reject), so a page that ignores the Promise still sees every error once;
 *  - stop(), leave(), leaveFromRoom() and closeWebSocket() are intentional and never trigger an
 *    automatic reconnection; closeWebSocket() clears every timer the adaptor started.
 *
 * See docs/sdk.md for the option, method and callback tables.
 */
"use strict";

/** The SDK's version (also `WebRTCAdaptor.VERSION`). */
const SDK_VERSION = "1.0.0";

/** Milliseconds between two `ping` commands while the WebSocket is open. */
const PING_INTERVAL_MS = 3000;
/** Bytes of payload per binary data-channel chunk (each chunk also carries a 4-byte token). */
const CHUNK_SIZE = 16000;
/** Largest binary message the receiver agrees to reassemble. */
const MAX_INCOMING_BINARY = 64 * 1024 * 1024;
/** Pause between `stop` and the new `publish`/`play` of a reconnection attempt. */
const RETRY_DELAY_MS = 500;
/** How long ICE may stay `disconnected` before the stream is restarted. */
const DISCONNECTED_GRACE_MS = 3000;
/** Two reconnection attempts of one stream are at least this far apart. */
const MIN_ATTEMPT_GAP_MS = 3000;
/** WebSocket reconnection back-off (the last value repeats). */
const WS_BACKOFF_MS = [500, 1000, 2000, 4000, 8000];
/** Commands kept while the WebSocket is (re)connecting, at most. */
const MAX_OUTBOX = 1000;
/** ICE states in which a stream is considered on its way or up. */
const ICE_ALIVE = ["checking", "connected", "completed"];

/**
 * Server refusals that end a publish/play request for good: the adaptor drops its peer
 * connection for that stream and does not retry (the error still reaches callbackError).
 */
const REFUSALS = new Set([
  "no_stream_exist",
  "stream_not_exist_or_not_streaming",
  "unauthorized_access",
  "streamIdInUse",
  "already_publishing",
  "already_playing",
  "not_allowed_unregistered_streams",
  "invalidStreamName",
  "noStreamNameSpecified",
  "room_not_active_or_expired",
  "stream_not_active_or_expired",
  "viewerLimitReached",
  "highResourceUsage",
  "user_blocked",
  "webrtc_not_enabled",
  "no_codec_enabled_in_the_server",
  "unsupported_codec",
  "notSetRemoteDescription",
  "notSetLocalDescription",
  "main_track_has_max_subtrack_count__not_allowed_to_add_more_subtracks",
  "server_will_stop",
  "license_suspended_please_renew_license",
  "server_error_check_logs",
]);

/**
 * A query parameter of the page's address (or of `search`), like Ant Media's helper:
 * `undefined` when absent, `true` when present without a value, otherwise the decoded value.
 * @param {string} name
 * @param {string} [search] a query string such as `"?id=abc"`; defaults to `location.search`
 * @returns {string | true | undefined}
 */
export function getUrlParameter(name, search) {
  const query = search ?? (typeof location !== "undefined" ? location.search : "");
  for (const part of String(query).replace(/^\?/, "").split("&")) {
    if (!part) continue;
    const eq = part.indexOf("=");
    const key = decodeURIComponent((eq < 0 ? part : part.slice(0, eq)).replace(/\+/g, " "));
    if (key === name) {
      return eq < 0 ? true : decodeURIComponent(part.slice(eq + 1).replace(/\+/g, " "));
    }
  }
  return undefined;
}

/** @param {unknown} value @returns {string} */
function orEmpty(value) {
  return value === undefined || value === null ? "" : /** @type {string} */ (value);
}

/** @param {unknown} error @returns {string} */
function messageOf(error) {
  if (error instanceof Error) return error.message || error.name;
  if (error && typeof error === "object" && "message" in error) return String(/** @type {any} */ (error).message);
  return String(error);
}

/** The transport protocol ("udp"/"tcp") of an ICE candidate. @param {RTCIceCandidate | RTCIceCandidateInit} c */
function candidateProtocol(c) {
  if ("protocol" in c && c.protocol) return String(c.protocol).toLowerCase();
  const fields = String(c.candidate || "").replace(/^a=/, "").split(/\s+/);
  return (fields[2] || "").toLowerCase();
}

/** Adds `stereo=1` to Opus in an answer, as Ant Media's SDK does. @param {string} sdp */
function stereo(sdp) {
  return sdp.replace(/useinbandfec=1(?!;\s*stereo=1)/g, "useinbandfec=1; stereo=1");
}

/** Strings that mention "script" are escaped before they reach the page (as the official SDK does). @param {string} text */
function sanitize(text) {
  return text.includes("script") ? text.replace(/</g, "&lt;").replace(/>/g, "&gt;") : text;
}

/**
 * @typedef {"publish" | "play" | "peer"} PeerMode
 *
 * @typedef {object} PeerState  one RTCPeerConnection and what the adaptor knows about it
 * @property {string} streamId
 * @property {PeerMode} mode
 * @property {RTCPeerConnection} pc
 * @property {boolean} remoteSet          a remote description has been applied
 * @property {RTCIceCandidateInit[]} candidates  remote candidates waiting for the remote description
 * @property {Promise<void>} chain        SDP operations run one after the other
 * @property {RTCDataChannel | null} dataChannel  the open channel used by sendData
 * @property {RTCDataChannel[]} channels  every channel of this connection
 * @property {ReturnType<typeof setTimeout> | null} watchdog
 * @property {Map<number, {size: number, received: number, bytes: Uint8Array}>} incoming
 * @property {MediaStream | null} fallbackStream
 * @property {boolean} closed
 * @property {boolean} offered
 * @property {boolean} restart           started by the adaptor (reconnection), not yet claimed by the page
 * @property {boolean} connected         ICE is connected now (it was, and has not been lost since)
 */

/**
 * @typedef {ReturnType<WebRTCAdaptor["_parseStats"]>} AdaptorStats  what getStats() resolves
 */

/**
 * @typedef {object} PlayParameters  the object form of play() (Ant Media's playStream())
 * @property {string} streamId
 * @property {string} [token]
 * @property {string} [roomId]
 * @property {string[]} [enableTracks]
 * @property {string} [subscriberId]
 * @property {string} [subscriberCode]
 * @property {string} [subscriberName]
 * @property {string | object} [metaData]
 * @property {string} [role]
 * @property {boolean} [disableTracksByDefault]
 */

/**
 * @typedef {object} PublishParameters
 * @property {string} streamId
 * @property {string} [token]
 * @property {string} [subscriberId]
 * @property {string} [subscriberCode]
 * @property {string} [streamName]
 * @property {string} [mainTrack]
 * @property {string | object} [metaData]
 * @property {string} [role]
 */

/**
 * @callback AdaptorCallback
 * @param {string} info  the event (`initialized`, `publish_started`, `newTrackAvailable`, ...)
 * @param {any} [obj]   its details (the server's message for server events)
 * @returns {void}
 *
 * @callback AdaptorErrorCallback
 * @param {string} error  the error definition (`no_stream_exist`, `WebSocketNotConnected`, `NotAllowedError`, ...)
 * @param {any} [message] its details: the server's error message or `{streamId?, message}`
 * @returns {void}
 */

/**
 * @typedef {object} WebRTCAdaptorOptions
 * @property {string} [websocket_url]  `ws(s)://host:port/{App}/websocket` (or `websocketURL`)
 * @property {string} [websocketURL]
 * @property {MediaStreamConstraints} [mediaConstraints]  default `{video: true, audio: true}`
 * @property {RTCConfiguration} [peerconnection_config]  passing `iceServers` skips getIceServerConfig
 * @property {object} [sdp_constraints]  accepted for compatibility (Ant Media's legacy offer options; unused)
 * @property {string} [localVideoId]   id of the <video> that shows the camera (muted)
 * @property {HTMLVideoElement} [localVideoElement]
 * @property {string} [remoteVideoId]  id of the <video> that receives played media
 * @property {HTMLVideoElement} [remoteVideoElement]
 * @property {boolean} [isPlayMode]    no camera/microphone; `?target=edge`
 * @property {boolean} [onlyDataChannel]  publish a data channel only, no media
 * @property {boolean} [dataChannelEnabled]  default true
 * @property {boolean} [debug]
 * @property {AdaptorCallback} [callback]
 * @property {AdaptorErrorCallback} [callbackError]
 * @property {string[]} [candidateTypes]  default `["udp", "tcp"]`
 * @property {boolean} [reconnectIfRequiredFlag]  default true
 * @property {number} [connectTimeoutMs]  ICE must be checking/connected this long after publish/play, default 5000
 * @property {boolean} [isMultiPeer]
 */

/**
 * The adaptor: one WebSocket to Confero, any number of peer connections (one publish, plays,
 * 1-1 calls), the local camera/microphone, data channels, reconnection.
 */
export class WebRTCAdaptor {
  /** The SDK's version. @returns {string} */
  static get VERSION() {
    return SDK_VERSION;
  }

  /**
   * Opens the camera/microphone (unless `isPlayMode`), then the WebSocket; `initialized`
   * follows once it is open.
   * @param {WebRTCAdaptorOptions} initialValues
   */
  constructor(initialValues = {}) {
    /** @type {string | null} */
    this.websocket_url = null;
    /** @type {string | null} */
    this.websocketURL = null;
    /** @type {MediaStreamConstraints} */
    this.mediaConstraints = { video: true, audio: true };
    /** @type {RTCConfiguration} */
    this.peerconnection_config = { iceServers: [] };
    /** @type {object} */
    this.sdp_constraints = { OfferToReceiveAudio: false, OfferToReceiveVideo: false };
    /** @type {string | undefined} */
    this.localVideoId = undefined;
    /** @type {string | undefined} */
    this.remoteVideoId = undefined;
    /** @type {HTMLVideoElement | null} */
    this.localVideoElement = null;
    /** @type {HTMLVideoElement | null} */
    this.remoteVideoElement = null;
    this.isPlayMode = false;
    this.onlyDataChannel = false;
    this.dataChannelEnabled = true;
    this.debug = false;
    /** @type {AdaptorCallback | null} */
    this.callback = null;
    /** @type {AdaptorErrorCallback | null} */
    this.callbackError = null;
    /** @type {string[]} */
    this.candidateTypes = ["udp", "tcp"];
    this.reconnectIfRequiredFlag = true;
    this.connectTimeoutMs = 5000;
    this.isMultiPeer = false;
    /** @type {string | null} */
    this.multiPeerStreamId = null;

    Object.assign(this, initialValues);
    this.peerconnection_config = { ...(initialValues.peerconnection_config || { iceServers: [] }) };
    if (!this.peerconnection_config.iceServers) this.peerconnection_config.iceServers = [];
    /** The page gave its own ICE servers: the server's iceServerConfig is not asked for. */
    this.userDefinedIceServers = !!(initialValues.peerconnection_config && initialValues.peerconnection_config.iceServers);
    if (this.websocketURL == null) this.websocketURL = this.websocket_url;
    if (this.websocket_url == null) this.websocket_url = this.websocketURL;
    if (!this.websocketURL) throw new Error("WebRTCAdaptor: the websocket_url option is required");

    // -- public state (same names as Ant Media's SDK) ---------------------------------------
    /** @type {Record<string, RTCPeerConnection>} peer connections by stream id */
    this.remotePeerConnection = {};
    /** @type {Record<string, Record<string, string>>} stream id -> (mid -> track id), from the server's offers */
    this.idMapping = {};
    /** @type {string[]} stream ids this adaptor plays */
    this.playStreamId = [];
    /** @type {string | null} the stream id of the last publish() */
    this.publishStreamId = null;
    /** @type {string | null} the room of the last joinRoom()/leaveFromRoom() */
    this.roomName = null;
    /** @type {MediaStream | null} the camera/microphone */
    this.localStream = null;
    this.cameraEnabled = true;
    this.micMuted = false;
    this.publishToken = undefined;
    this.playToken = undefined;

    // -- private state -----------------------------------------------------------------------
    /** @type {Map<string, PeerState>} */
    this._peers = new Map();
    /** @type {Map<string, PublishParameters>} publishes wanted (restarted on reconnection) */
    this._published = new Map();
    /** @type {Map<string, PlayParameters>} plays wanted (restarted on reconnection) */
    this._played = new Map();
    /** @type {Set<string>} 1-1 call ids joined */
    this._calls = new Set();
    /** @type {Map<string, string>} room -> the stream id joinedTheRoom gave this adaptor */
    this._rooms = new Map();
    /** @type {Map<string, RTCIceCandidateInit[]>} candidates of a call whose connection does not exist yet */
    this._earlyCandidates = new Map();
    /** @type {Map<string, ReturnType<typeof setTimeout>>} pending re-publish/re-play per stream */
    this._retryTimers = new Map();
    /** @type {Map<string, string>} the last command sent about each stream id */
    this._lastCommand = new Map();
    /** @type {Map<string, number>} time of the last reconnection attempt per stream */
    this._lastAttempt = new Map();
    /** @type {Map<string, ReturnType<typeof setInterval>>} enableStats() timers */
    this._statsTimers = new Map();
    /** @type {Map<string, {time: number, bytesSent: number, bytesReceived: number, last: {time: number, bytesSent: number, bytesReceived: number}}>} */
    this._statsSamples = new Map();
    /** @type {((info: string, obj?: any) => void)[]} */
    this._listeners = [];
    /** @type {((error: string, message?: any) => void)[]} */
    this._errorListeners = [];
    /** @type {WebSocket | null} */
    this._ws = null;
    /** @type {string[]} commands waiting for the WebSocket */
    this._outbox = [];
    this._wsAttempt = 0;
    /** the current socket has opened */
    this._wsOpened = false;
    /** @type {Set<string>} publishes waiting for the camera/microphone */
    this._awaitingMedia = new Set();
    this._everOpened = false;
    this._outageReported = false;
    this._userClosed = false;
    /** @type {ReturnType<typeof setInterval> | null} */
    this._pingTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._wsRetryTimer = null;
    /** @type {{context: AudioContext, timer: ReturnType<typeof setInterval>} | null} */
    this._levelMeter = null;

    this.initialize();
  }

  // =========================================================================================
  // Set-up, events, errors
  // =========================================================================================

  /**
   * Opens the local media (unless play mode or data-only), then the WebSocket. Called by the
   * constructor; resolves once the WebSocket is being opened.
   * @returns {Promise<void>}
   */
  async initialize() {
    if (!this.isPlayMode && !this.onlyDataChannel && this.localStream == null) {
      await this.openStream(this.mediaConstraints);
    }
    this._connect();
  }

  /** Plugins' way in: also told every event. @param {(info: string, obj?: any) => void} listener */
  addEventListener(listener) {
    this._listeners.push(listener);
  }

  /** Plugins' way in: also told every error. @param {(error: string, message?: any) => void} listener */
  addErrorEventListener(listener) {
    this._errorListeners.push(listener);
  }

  /** @param {string} info @param {any} [obj] */
  notifyEventListeners(info, obj) {
    for (const listener of [...this._listeners, this.callback]) {
      if (typeof listener !== "function") continue;
      try {
        listener(info, obj);
      } catch (e) {
        console.error(`WebRTCAdaptor: the callback threw on "${info}":`, e);
      }
    }
  }

  /** @param {string} error @param {any} [message] */
  notifyErrorEventListeners(error, message) {
    if (this.debug) console.debug("[WebRTCAdaptor] error", error, message);
    const targets = [...this._errorListeners, this.callbackError].filter((f) => typeof f === "function");
    if (targets.length === 0) {
      console.error("WebRTCAdaptor error:", error, message);
      return;
    }
    for (const listener of targets) {
      try {
        listener(error, message);
      } catch (e) {
        console.error(`WebRTCAdaptor: callbackError threw on "${error}":`, e);
      }
    }
  }

  /** @param {...any} args */
  _log(...args) {
    if (this.debug) console.debug("[WebRTCAdaptor]", ...args);
  }

  /** @returns {HTMLVideoElement | null} */
  get localVideo() {
    return this.localVideoElement || (this.localVideoId ? /** @type {any} */ (document.getElementById(this.localVideoId)) : null);
  }

  /** @returns {HTMLVideoElement | null} */
  get remoteVideo() {
    return this.remoteVideoElement || (this.remoteVideoId ? /** @type {any} */ (document.getElementById(this.remoteVideoId)) : null);
  }

  // =========================================================================================
  // WebSocket
  // =========================================================================================

  _connect() {
    if (this._ws || this._userClosed) return;
    let url;
    try {
      url = new URL(/** @type {string} */ (this.websocketURL), typeof location !== "undefined" ? location.href : undefined);
    } catch (e) {
      this.notifyErrorEventListeners("protocol_not_supported", { message: `invalid WebSocket URL ${this.websocketURL}: ${messageOf(e)}` });
      return;
    }
    if (url.protocol !== "ws:" && url.protocol !== "wss:") {
      this.notifyErrorEventListeners("protocol_not_supported", {
        message: `the WebSocket URL must start with ws:// or wss://, not ${url.protocol}//`,
      });
      return;
    }
    if (!["origin", "edge"].includes(url.searchParams.get("target") || "")) {
      url.searchParams.set("target", this.isPlayMode ? "edge" : "origin");
    }
    if (typeof WebSocket === "undefined") {
      this.notifyErrorEventListeners("WebSocketNotSupported", { message: "this browser has no WebSocket" });
      return;
    }
    let ws;
    try {
      ws = new WebSocket(url.toString());
    } catch (e) {
      this.notifyErrorEventListeners("WebSocketNotConnected", { message: `cannot open ${url}: ${messageOf(e)}` });
      this._scheduleWsRetry();
      return;
    }
    this._ws = ws;
    this._wsOpened = false;
    this._log("connecting to", url.toString());
    ws.onopen = () => this._onOpen(ws);
    ws.onmessage = (event) => {
      if (this._ws === ws) this._onMessage(event.data);
    };
    ws.onerror = () => {
      if (this._ws !== ws || this._userClosed || this._outageReported) return;
      this._outageReported = true;
      this.notifyErrorEventListeners("WebSocketNotConnected", {
        message: this._everOpened ? `the connection to ${url.host} failed; reconnecting` : `cannot connect to ${url}`,
      });
    };
    ws.onclose = (event) => this._onClose(ws, event);
  }

  /** @param {WebSocket} ws */
  _onOpen(ws) {
    if (this._ws !== ws) return;
    const reconnected = this._everOpened;
    this._everOpened = true;
    this._wsOpened = true;
    this._wsAttempt = 0;
    this._outageReported = false;
    this._pingTimer = setInterval(() => this._send({ command: "ping" }), PING_INTERVAL_MS);
    this._log("WebSocket open");
    if (!this.userDefinedIceServers) this._send({ command: "getIceServerConfig" });
    // Commands given while connecting go first, in order.
    const outbox = this._outbox;
    this._outbox = [];
    for (const text of outbox) ws.send(text);
    this.notifyEventListeners("initialized");
    if (reconnected) this._resume();
    // Connections waiting for the socket get their full time to connect from now on.
    for (const peer of this._peers.values()) {
      if (peer.mode !== "peer" && !ICE_ALIVE.includes(peer.pc.iceConnectionState)) this._armWatchdog(peer.streamId, this.connectTimeoutMs);
    }
  }

  /** After a WebSocket reconnection: what the server dropped with the old socket starts again. */
  _resume() {
    for (const args of [...this._published.values()]) {
      const id = args.streamId;
      if (this._peers.has(id) || this._retryTimers.has(id) || this._awaitingMedia.has(id)) continue;
      this.notifyEventListeners("reconnection_attempt_for_publisher", args.streamId);
      // A legacy room member (publish without mainTrack) is put back in its room.
      const room = [...this._rooms].find(([, id]) => id === args.streamId)?.[0];
      this._startPublish(args.mainTrack || !room ? args : { ...args, mainTrack: room }, true);
    }
    for (const args of [...this._played.values()]) {
      if (this._peers.has(args.streamId) || this._retryTimers.has(args.streamId)) continue;
      this.notifyEventListeners("reconnection_attempt_for_player", args.streamId);
      this._startPlay(args, true);
    }
    for (const id of this._calls) this._sendJoin(id);
  }

  /** @param {WebSocket} ws @param {CloseEvent} event */
  _onClose(ws, event) {
    if (this._ws !== ws) return;
    const wasOpen = this._wsOpened;
    this._ws = null;
    this._wsOpened = false;
    this._clearPing();
    this._log("WebSocket closed", event.code, event.reason);
    this.notifyEventListeners("closed", event);
    if (this._userClosed) return;
    if (wasOpen) {
      // The server stopped everything of that socket: drop our side; it restarts once reconnected.
      // (After a failed attempt instead, the queued commands and their connections just wait.)
      for (const id of [...this._peers.keys()]) this._closePeer(id);
      for (const timer of this._retryTimers.values()) clearTimeout(timer);
      this._retryTimers.clear();
      this._earlyCandidates.clear();
    }
    this._scheduleWsRetry();
  }

  _scheduleWsRetry() {
    if (this._userClosed || this._wsRetryTimer) return;
    const delay = WS_BACKOFF_MS[Math.min(this._wsAttempt, WS_BACKOFF_MS.length - 1)];
    this._wsAttempt += 1;
    this._log(`reconnecting the WebSocket in ${delay} ms`);
    this._wsRetryTimer = setTimeout(() => {
      this._wsRetryTimer = null;
      this._connect();
    }, delay);
  }

  _clearPing() {
    if (this._pingTimer) clearInterval(this._pingTimer);
    this._pingTimer = null;
  }

  /**
   * Sends one command: now when the socket is open, later (in order) while it is connecting.
   * @param {Record<string, any>} command
   * @returns {boolean} false when it could not be sent (the error was reported)
   */
  _send(command) {
    const text = JSON.stringify(command);
    if (command.streamId && command.command !== "ping") this._lastCommand.set(command.streamId, command.command);
    const ws = this._ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(text);
      if (this.debug && command.command !== "ping") this._log("sent", text.length > 300 ? text.slice(0, 300) + "…" : text);
      return true;
    }
    if (command.command === "ping" || command.command === "stop") return false;
    if (!this._userClosed && this._outbox.length < MAX_OUTBOX && (ws || this._wsRetryTimer || !this._everOpened)) {
      this._outbox.push(text);
      return true;
    }
    this.notifyErrorEventListeners("WebSocketNotConnected", {
      streamId: command.streamId,
      command: command.command,
      message: this._userClosed
        ? `cannot send ${command.command}: closeWebSocket() was called (call checkWebSocketConnection() to reconnect)`
        : `cannot send ${command.command}: the WebSocket is not connected`,
    });
    return false;
  }

  /** Opens the WebSocket again if it is closed (also after closeWebSocket()). */
  checkWebSocketConnection() {
    this._userClosed = false;
    if (!this._ws && !this._wsRetryTimer) this._connect();
  }

  /** @returns {boolean} */
  isConnected() {
    return !!this._ws && this._ws.readyState === WebSocket.OPEN;
  }

  /**
   * Closes every peer connection and the WebSocket, and clears every timer. No reconnection
   * follows; the server ends this client's streams, plays, rooms and calls.
   */
  closeWebSocket() {
    this._userClosed = true;
    if (this._wsRetryTimer) clearTimeout(this._wsRetryTimer);
    this._wsRetryTimer = null;
    this._clearPing();
    for (const timer of this._retryTimers.values()) clearTimeout(timer);
    this._retryTimers.clear();
    for (const id of [...this._statsTimers.keys()]) this.disableStats(id);
    for (const id of [...this._peers.keys()]) this._closePeer(id);
    this._published.clear();
    this._played.clear();
    this._calls.clear();
    this._rooms.clear();
    this._earlyCandidates.clear();
    this._lastAttempt.clear();
    this._lastCommand.clear();
    this._outbox = [];
    this.playStreamId = [];
    this.remotePeerConnection = {};
    const ws = this._ws;
    if (ws) {
      try {
        ws.close(1000, "closeWebSocket");
      } catch (e) {
        this._log("close failed", e);
      }
    }
  }

  // =========================================================================================
  // Messages from the server
  // =========================================================================================

  /** @param {string} text */
  _onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (e) {
      this.notifyErrorEventListeners("invalid_json", { message: `the server sent a message that is not JSON: ${messageOf(e)}` });
      return;
    }
    if (this.debug && msg.command !== "pong") this._log("received", text.length > 300 ? text.slice(0, 300) + "…" : text);
    switch (msg.command) {
      case "start":
        this._onStart(msg.streamId);
        break;
      case "takeConfiguration":
        this._onTakeConfiguration(msg);
        break;
      case "takeCandidate":
        this._onTakeCandidate(msg);
        break;
      case "stop":
        // Sent in 1-1 calls when the other peer leaves: that connection ends, the call stays joined.
        this._forget(msg.streamId);
        this._closePeer(msg.streamId);
        break;
      case "error":
        this._onServerError(msg);
        break;
      case "notification":
        this._onNotification(msg);
        break;
      case "pong":
        this.notifyEventListeners("pong");
        break;
      case "iceServerConfig":
        this._onIceServerConfig(msg);
        break;
      case "connectWithNewId":
        this.multiPeerStreamId = msg.streamId;
        this.join(msg.streamId);
        break;
      default:
        // streamInformation, roomInformation, trackList, peerMessageCommand and anything newer.
        this.notifyEventListeners(msg.command, msg);
    }
  }

  /** @param {any} msg */
  _onIceServerConfig(msg) {
    const uri = msg.stunServerUri;
    /** @type {string[]} Confero's turnServerUris: every TURN URL, with the same credentials. */
    const turnUris = Array.isArray(msg.turnServerUris) ? msg.turnServerUris.map(String) : [];
    if (!uri && turnUris.length === 0) return;
    if (turnUris.length > 0) {
      this.peerconnection_config.iceServers = [
        { urls: turnUris, username: msg.turnServerUsername || "", credential: msg.turnServerCredential || "" },
      ];
    } else if (String(uri).startsWith("turn:") || String(uri).startsWith("turns:")) {
      this.peerconnection_config.iceServers = [
        { urls: uri, username: msg.turnServerUsername || "", credential: msg.turnServerCredential || "" },
      ];
    } else {
      this.peerconnection_config.iceServers = [{ urls: uri }];
    }
    this._log("ICE servers", this.peerconnection_config.iceServers);
    // Connections made before the answer (publish/play right after `initialized`) use them too.
    for (const peer of this._peers.values()) {
      try {
        peer.pc.setConfiguration({ ...peer.pc.getConfiguration(), iceServers: this.peerconnection_config.iceServers });
      } catch (e) {
        this._log(`ICE servers not applied to ${peer.streamId}:`, e);
      }
    }
  }

  /** @param {any} msg */
  _onServerError(msg) {
    const streamId = msg.streamId;
    if (streamId && REFUSALS.has(msg.definition)) {
      const peer = this._peers.get(streamId);
      // A publish/play refused before negotiation is over (no retry). A connection that already
      // negotiated is not touched, nor is one whose last command was a query (getStreamInfo...).
      const answered = ["publish", "play", "takeConfiguration", "takeCandidate"].includes(this._lastCommand.get(streamId) || "");
      if (peer && peer.mode !== "peer" && !peer.remoteSet && answered) {
        this._forget(streamId);
        this._closePeer(streamId);
      }
    }
    this.notifyErrorEventListeners(msg.definition, msg);
  }

  /** @param {any} msg */
  _onNotification(msg) {
    const streamId = msg.streamId;
    switch (msg.definition) {
      case "publish_finished":
      case "play_finished": {
        // The server ended it. While our connection is alive (publisher gone, room closed): no
        // reconnection for it. When our side lost its connection too (the network went away
        // and the server timed the stream out meanwhile), it is restarted like a failed one.
        const peer = streamId ? this._peers.get(streamId) : undefined;
        if (peer && peer.remoteSet && peer.mode !== "peer") {
          const lost = msg.reason === "connectionLost" || (!peer.connected && peer.pc.iceConnectionState !== "new");
          const wanted = this._published.has(streamId) || this._played.has(streamId);
          if (lost && wanted && this.reconnectIfRequiredFlag) {
            this._reconnect(streamId);
          } else {
            this._forget(streamId);
            this._closePeer(streamId);
          }
        }
        break;
      }
      case "joinedTheRoom":
        if (msg.room && streamId) this._rooms.set(msg.room, streamId);
        break;
      case "leavedFromRoom":
        if (msg.room) this._rooms.delete(msg.room);
        break;
      case "leaved":
        this._calls.delete(streamId);
        break;
      default:
        break;
    }
    this.notifyEventListeners(msg.definition, msg);
  }

  // =========================================================================================
  // Publish / play / stop
  // =========================================================================================

  /**
   * Publishes the camera/microphone as `streamId`. With `mainTrack` = a room id, the stream is
   * that room's member stream (the multitrack conference flow).
   * @param {string} streamId
   * @param {string} [token]
   * @param {string} [subscriberId]
   * @param {string} [subscriberCode]
   * @param {string} [streamName]
   * @param {string} [mainTrack]
   * @param {string | object} [metaData]
   * @param {string} [role]
   */
  publish(streamId, token, subscriberId, subscriberCode, streamName, mainTrack, metaData, role) {
    const args = { streamId, token, subscriberId, subscriberCode, streamName, mainTrack, metaData, role };
    const current = this._published.get(streamId);
    const peer = this._peers.get(streamId);
    if (current && peer) {
      if (peer.restart) {
        // The adaptor is already publishing it again after a reconnection: adopt that one.
        Object.assign(current, args);
        peer.restart = false;
        this._log(`publish(${streamId}): already being restarted after a reconnection`);
      } else {
        this.notifyErrorEventListeners("already_publishing", { streamId, message: `${streamId} is already being published by this adaptor` });
      }
      return;
    }
    this.publishStreamId = streamId;
    this.publishToken = token;
    this._published.set(streamId, args);
    this._cancelRetry(streamId);
    this._startPublish(args);
  }

  /**
   * @param {PublishParameters} args
   * @param {boolean} [restart] started by the adaptor itself (reconnection)
   */
  async _startPublish(args, restart = false) {
    const { streamId } = args;
    const wanted = this._published.get(streamId);
    if (!this.onlyDataChannel && this.localStream == null) {
      this._awaitingMedia.add(streamId);
      const stream = await this.openStream(this.mediaConstraints);
      this._awaitingMedia.delete(streamId);
      if (!stream) {
        if (this._published.get(streamId) === wanted) this._published.delete(streamId);
        return;
      }
    }
    if (this._published.get(streamId) !== wanted) return; // stopped meanwhile
    const local = this.onlyDataChannel ? null : this.localStream;
    this._send({
      command: "publish",
      streamId,
      token: args.token,
      subscriberId: orEmpty(args.subscriberId),
      subscriberCode: orEmpty(args.subscriberCode),
      streamName: orEmpty(args.streamName),
      mainTrack: orEmpty(args.mainTrack),
      video: !!local && local.getVideoTracks().length > 0,
      audio: !!local && local.getAudioTracks().length > 0,
      metaData: orEmpty(args.metaData),
      role: orEmpty(args.role),
    });
    const peer = this._createPeer(streamId, "publish");
    if (peer) peer.restart = restart;
    this._armWatchdog(streamId, this.connectTimeoutMs);
  }

  /**
   * Plays a stream, or a whole room on one connection (`play(room, token, room, tracks)`).
   * Also accepts the object form `play({streamId, token, roomId, enableTracks, ...})`.
   * `enableTracks` lists member ids to receive; `"!id"` excludes one.
   * @param {string | PlayParameters} streamId
   * @param {string} [token]
   * @param {string} [roomId]
   * @param {string[]} [enableTracks]
   * @param {string} [subscriberId]
   * @param {string} [subscriberCode]
   * @param {string | object} [metaData]
   * @param {string} [role]
   */
  play(streamId, token, roomId, enableTracks, subscriberId, subscriberCode, metaData, role) {
    /** @type {PlayParameters} */
    const args =
      streamId !== null && typeof streamId === "object"
        ? { ...streamId }
        : { streamId: /** @type {string} */ (streamId), token, roomId, enableTracks, subscriberId, subscriberCode, metaData, role };
    const id = args.streamId;
    const current = this._played.get(id);
    const peer = this._peers.get(id);
    if (current && peer) {
      if (peer.restart) {
        // The adaptor is already playing it again after a reconnection: adopt that one.
        Object.assign(current, args);
        peer.restart = false;
        this._log(`play(${id}): already being restarted after a reconnection`);
      } else {
        this.notifyErrorEventListeners("already_playing", { streamId: id, message: `${id} is already being played by this adaptor` });
      }
      return;
    }
    this.playToken = args.token;
    this._played.set(id, args);
    this._cancelRetry(id);
    this._startPlay(args);
  }

  /** Ant Media's object-style play. @param {PlayParameters} parameters */
  playStream(parameters) {
    this.play(parameters);
  }

  /**
   * @param {PlayParameters} args
   * @param {boolean} [restart] started by the adaptor itself (reconnection)
   */
  _startPlay(args, restart = false) {
    const id = args.streamId;
    if (!this.playStreamId.includes(id)) this.playStreamId.push(id);
    /** @type {Record<string, any>} */
    const command = {
      command: "play",
      streamId: id,
      token: orEmpty(args.token),
      room: orEmpty(args.roomId),
      trackList: Array.isArray(args.enableTracks) ? args.enableTracks : [],
      subscriberId: orEmpty(args.subscriberId),
      subscriberCode: orEmpty(args.subscriberCode),
      viewerInfo: orEmpty(args.metaData),
      role: orEmpty(args.role),
      userPublishId: orEmpty(this.publishStreamId),
    };
    if (args.subscriberName !== undefined) command.subscriberName = args.subscriberName;
    if (args.disableTracksByDefault !== undefined) command.disableTracksByDefault = !!args.disableTracksByDefault;
    this._send(command);
    const peer = this._createPeer(id, "play");
    if (peer) peer.restart = restart;
    this._armWatchdog(id, this.connectTimeoutMs);
  }

  /**
   * Stops publishing or playing `streamId` (or ends the connection of a 1-1 call): the peer
   * connection closes, `stop` goes to the server (which answers publish_finished/play_finished).
   * @param {string} streamId
   */
  stop(streamId) {
    this._forget(streamId);
    this._closePeer(streamId);
    if (this.isConnected()) this._send({ command: "stop", streamId });
  }

  /** Forgets that `streamId` is wanted: no reconnection will restart it. @param {string} streamId */
  _forget(streamId) {
    this._published.delete(streamId);
    this._played.delete(streamId);
    this._lastAttempt.delete(streamId);
    this._cancelRetry(streamId);
  }

  /** @param {string} streamId */
  _cancelRetry(streamId) {
    const timer = this._retryTimers.get(streamId);
    if (timer) clearTimeout(timer);
    this._retryTimers.delete(streamId);
  }

  // =========================================================================================
  // Conference rooms
  // =========================================================================================

  /**
   * Joins a conference room; the server answers `joinedTheRoom` with the stream id to publish
   * with (generated when `streamId` is empty) and the room's active streams.
   * @param {string} roomName
   * @param {string} [streamId]
   * @param {string} [mode]  "legacy" | "mcu" | "amcu" | "multitrack" (Confero treats them alike)
   * @param {string} [streamName]
   * @param {string} [role]
   * @param {string | object} [metadata]
   */
  joinRoom(roomName, streamId, mode, streamName, role, metadata) {
    this.roomName = roomName;
    this._send({ command: "joinRoom", room: roomName, mainTrack: roomName, streamId, mode, streamName, role, metadata });
  }

  /**
   * Leaves a room: every publish/play of this adaptor stops first (as Ant Media's SDK does),
   * then the server removes the member and answers `leavedFromRoom`.
   * @param {string} roomName
   * @param {string} [streamId]
   */
  leaveFromRoom(roomName, streamId) {
    for (const [id, peer] of [...this._peers]) {
      if (peer.mode === "peer") continue;
      this._forget(id);
      this._closePeer(id);
    }
    this._published.clear();
    this._played.clear();
    this.roomName = roomName;
    this._rooms.delete(roomName);
    this._send({ command: "leaveFromRoom", room: roomName, mainTrack: roomName, streamId });
  }

  /**
   * Asks for the room's active streams (except `streamId`): `roomInformation`.
   * @param {string} roomName
   * @param {string} [streamId]
   */
  getRoomInfo(roomName, streamId) {
    this._send({ command: "getRoomInfo", room: roomName, streamId });
  }

  /**
   * Starts or stops forwarding one member of a room play without renegotiating.
   * @param {string} mainTrackId the room (the played stream id)
   * @param {string} trackId the member stream id (or its `ARDAMSv…` track id)
   * @param {boolean} enabled
   */
  enableTrack(mainTrackId, trackId, enabled) {
    this._send({ command: "enableTrack", streamId: mainTrackId, trackId, enabled: !!enabled });
  }

  /** Asks for the member streams of a room: `trackList`. @param {string} streamId @param {string} [token] */
  getTrackList(streamId, token) {
    this._send({ command: "getTrackList", streamId, token });
  }

  /** Ant Media's name for getTrackList. @param {string} streamId @param {string} [token] */
  getTracks(streamId, token) {
    this.getTrackList(streamId, token);
  }

  /** Asks for codec/bitrate details of a live stream: `streamInformation`. @param {string} streamId */
  getStreamInfo(streamId) {
    this._send({ command: "getStreamInfo", streamId });
  }

  /**
   * Accepted for compatibility; Confero forwards every member's video, so there is nothing to limit.
   * @param {string} streamId @param {number} maxTrackCount
   */
  setMaxVideoTrackCount(streamId, maxTrackCount) {
    this._log(`setMaxVideoTrackCount(${streamId}, ${maxTrackCount}) ignored: Confero forwards every track`);
  }

  /**
   * Sends this adaptor's audio level over the data channel (as Ant Media's conference page does).
   * @param {string} streamId @param {number} value
   */
  updateAudioLevel(streamId, value) {
    return this.sendData(streamId, JSON.stringify({ streamId, eventType: "UPDATE_AUDIO_LEVEL", audioLevel: value }));
  }

  // Commands Ant Media's SDK has that are passed through as they are (the server answers or
  // reports `unknown_command` through callbackError).

  /** @param {string} streamId @param {string} trackId @param {boolean} enabled */
  toggleVideo(streamId, trackId, enabled) {
    this._send({ command: "toggleVideo", streamId, trackId, enabled });
  }

  /** @param {string} streamId @param {string} trackId @param {boolean} enabled */
  toggleAudio(streamId, trackId, enabled) {
    this._send({ command: "toggleAudio", streamId, trackId, enabled });
  }

  /** @param {string} streamId @param {number | "auto"} resolution */
  forceStreamQuality(streamId, resolution) {
    this._send({ command: "forceStreamQuality", streamId, streamHeight: resolution });
  }

  /** @param {string} streamId @param {string | object} metaData */
  updateStreamMetaData(streamId, metaData) {
    this._send({ command: "updateStreamMetaData", streamId, metaData });
  }

  /** @param {string} streamId */
  getBroadcastObject(streamId) {
    this._send({ command: "getBroadcastObject", streamId });
  }

  // =========================================================================================
  // 1-1 calls
  // =========================================================================================

  /**
   * Joins the 1-1 call `streamId`: the server answers `joined`; when a second peer joins, the
   * first one gets `start` and offers its camera; media then flows browser to browser.
   * @param {string} streamId
   */
  join(streamId) {
    this._calls.add(streamId);
    this._sendJoin(streamId);
  }

  /** @param {string} streamId */
  _sendJoin(streamId) {
    this._send({
      command: "join",
      streamId,
      multiPeer: this.isMultiPeer && this.multiPeerStreamId == null,
      mode: this.isPlayMode ? "play" : "both",
    });
  }

  /** Leaves the 1-1 call: the server answers `leaved`, the other peer gets `stop`. @param {string} streamId */
  leave(streamId) {
    const id = this.isMultiPeer && this.multiPeerStreamId != null ? this.multiPeerStreamId : streamId;
    this._calls.delete(streamId);
    this._calls.delete(id);
    this._earlyCandidates.delete(streamId);
    this._send({ command: "leave", streamId: id });
    this._closePeer(streamId);
    this.multiPeerStreamId = null;
  }

  /**
   * A message to the other peer of a 1-1 call, relayed by the server (`peerMessageCommand`).
   * @param {string} streamId @param {string} definition @param {any} data
   */
  peerMessage(streamId, definition, data) {
    this._send({ command: "peerMessageCommand", streamId, definition, data });
  }

  // =========================================================================================
  // Peer connections and SDP
  // =========================================================================================

  /**
   * The connection for `streamId`, created when missing.
   * @param {string} streamId
   * @param {PeerMode} mode  publish: local tracks + own data channel; play: receive, server's
   *   channel; peer (1-1 call): local tracks unless play mode, own channel when offering
   * @param {boolean} [offerer]
   * @returns {PeerState | null} null when the browser refused (reported)
   */
  _createPeer(streamId, mode, offerer = false) {
    const existing = this._peers.get(streamId);
    if (existing) return existing;
    let pc;
    try {
      pc = new RTCPeerConnection(this.peerconnection_config);
    } catch (e) {
      this.notifyErrorEventListeners("peer_connection_error", { streamId, message: `cannot create an RTCPeerConnection: ${messageOf(e)}` });
      return null;
    }
    /** @type {PeerState} */
    const peer = {
      streamId,
      mode,
      pc,
      remoteSet: false,
      candidates: this._earlyCandidates.get(streamId) || [],
      chain: Promise.resolve(),
      dataChannel: null,
      channels: [],
      watchdog: null,
      incoming: new Map(),
      fallbackStream: null,
      closed: false,
      offered: false,
      restart: false,
      connected: false,
    };
    this._earlyCandidates.delete(streamId);
    this._peers.set(streamId, peer);
    this.remotePeerConnection[streamId] = pc;

    const sendsMedia = mode === "publish" || (mode === "peer" && !this.isPlayMode);
    const local = sendsMedia && !this.onlyDataChannel ? this.localStream : null;
    if (local) {
      for (const track of local.getTracks()) pc.addTrack(track, local);
    }
    if (mode === "peer" && offerer) {
      // Receive the other side's audio and video even without (some) local tracks.
      if (!local || local.getAudioTracks().length === 0) pc.addTransceiver("audio", { direction: "recvonly" });
      if (!local || local.getVideoTracks().length === 0) pc.addTransceiver("video", { direction: "recvonly" });
    }
    if (this.dataChannelEnabled) {
      if (mode === "publish" || (mode === "peer" && offerer)) {
        this._initDataChannel(peer, pc.createDataChannel(streamId, { ordered: true }));
      }
      if (mode !== "publish") pc.ondatachannel = (event) => this._initDataChannel(peer, event.channel);
    }
    pc.onicecandidate = (event) => this._onLocalCandidate(peer, event.candidate);
    pc.ontrack = (event) => this._onTrack(peer, event);
    pc.oniceconnectionstatechange = () => this._onIceState(peer);
    this._log(`peer connection for ${streamId} (${mode}${offerer ? ", offerer" : ""})`);
    return peer;
  }

  /**
   * Runs `step` after the connection's earlier SDP operations; a failure is reported once.
   * @param {PeerState} peer @param {() => Promise<void>} step
   */
  _enqueue(peer, step) {
    peer.chain = peer.chain.then(() => (peer.closed ? undefined : step())).catch((e) => {
      if (peer.closed) return;
      const definition = e && e.definition ? e.definition : "peer_connection_error";
      this.notifyErrorEventListeners(definition, { streamId: peer.streamId, message: messageOf(e) });
    });
  }

  /** `start`: make the offer for a publish (or as the first peer of a 1-1 call). @param {string} streamId */
  _onStart(streamId) {
    let peer = this._peers.get(streamId) || null;
    if (this._calls.has(streamId)) {
      if (peer && (peer.offered || peer.remoteSet)) this._closePeer(streamId); // a new partner
      peer = this._createPeer(streamId, "peer", true);
    } else if (!peer || peer.mode !== "publish") {
      this._log(`start for ${streamId}, which is not being published here: ignored`);
      return;
    }
    const target = peer;
    if (!target || target.offered) return;
    target.offered = true;
    this._enqueue(target, async () => {
      const offer = await target.pc.createOffer();
      try {
        await target.pc.setLocalDescription(offer);
      } catch (e) {
        throw Object.assign(new Error(`cannot set the local offer: ${messageOf(e)}`), { definition: "notSetLocalDescription" });
      }
      if (target.closed) return;
      this._send({ command: "takeConfiguration", streamId, type: "offer", sdp: offer.sdp });
    });
  }

  /** @param {any} msg */
  _onTakeConfiguration(msg) {
    const { streamId, type, sdp } = msg;
    let peer = this._peers.get(streamId) || null;
    if (type === "offer") {
      // Every offer (first one and renegotiations of a room play) carries the full mapping.
      this.idMapping[streamId] = msg.idMapping || {};
      if (!peer) {
        const mode = this._calls.has(streamId) ? "peer" : "play";
        if (mode === "play" && !this.playStreamId.includes(streamId)) this.playStreamId.push(streamId);
        peer = this._createPeer(streamId, mode);
        if (!peer) return;
      }
    } else if (type === "answer") {
      if (!peer) {
        this._log(`answer for ${streamId}, which has no connection (stopped?): ignored`);
        return;
      }
    } else {
      this.notifyErrorEventListeners("notSetRemoteDescription", { streamId, message: `unknown SDP type ${type}` });
      return;
    }
    const target = peer;
    this._enqueue(target, async () => {
      try {
        await target.pc.setRemoteDescription({ type, sdp });
      } catch (e) {
        throw Object.assign(new Error(`cannot apply the server's ${type}: ${messageOf(e)}`), { definition: "notSetRemoteDescription" });
      }
      target.remoteSet = true;
      const queued = target.candidates;
      target.candidates = [];
      for (const candidate of queued) this._addCandidate(target, candidate);
      if (type !== "offer" || target.closed) return;
      const answer = await target.pc.createAnswer();
      const munged = { type: answer.type, sdp: stereo(answer.sdp || "") };
      try {
        await target.pc.setLocalDescription(munged);
      } catch (e) {
        throw Object.assign(new Error(`cannot set the local answer: ${messageOf(e)}`), { definition: "notSetLocalDescription" });
      }
      if (target.closed) return;
      this._send({ command: "takeConfiguration", streamId, type: "answer", sdp: munged.sdp });
    });
  }

  /** @param {RTCIceCandidate | RTCIceCandidateInit} candidate */
  _candidateAllowed(candidate) {
    return this.candidateTypes.includes(candidateProtocol(candidate));
  }

  /** @param {PeerState} peer @param {RTCIceCandidate | null} candidate */
  _onLocalCandidate(peer, candidate) {
    if (peer.closed || !candidate || !candidate.candidate) return;
    if (!this._candidateAllowed(candidate)) {
      this._log(`local candidate not sent (protocol not in candidateTypes ${this.candidateTypes}):`, candidate.candidate);
      return;
    }
    this._send({
      command: "takeCandidate",
      streamId: peer.streamId,
      label: candidate.sdpMLineIndex,
      id: candidate.sdpMid,
      candidate: candidate.candidate,
    });
  }

  /** @param {any} msg */
  _onTakeCandidate(msg) {
    /** @type {RTCIceCandidateInit} */
    const init = { candidate: msg.candidate || "" };
    if (typeof msg.label === "number") init.sdpMLineIndex = msg.label;
    if (typeof msg.id === "string" && msg.id !== "") init.sdpMid = msg.id;
    if (init.sdpMLineIndex === undefined && init.sdpMid === undefined) init.sdpMLineIndex = 0;
    if (init.candidate && !this._candidateAllowed(init)) {
      this._log(`remote candidate ignored (protocol not in candidateTypes ${this.candidateTypes}):`, init.candidate);
      return;
    }
    const peer = this._peers.get(msg.streamId);
    if (!peer) {
      if (this._calls.has(msg.streamId)) {
        const early = this._earlyCandidates.get(msg.streamId) || [];
        if (early.length < 100) early.push(init);
        this._earlyCandidates.set(msg.streamId, early);
      } else {
        this._log(`candidate for ${msg.streamId}, which has no connection: ignored`);
      }
      return;
    }
    if (peer.remoteSet) this._addCandidate(peer, init);
    else peer.candidates.push(init);
  }

  /** @param {PeerState} peer @param {RTCIceCandidateInit} init */
  _addCandidate(peer, init) {
    peer.pc.addIceCandidate(init).catch((e) => {
      if (peer.closed || peer.pc.signalingState === "closed") return;
      this.notifyErrorEventListeners("ice_candidate_error", {
        streamId: peer.streamId,
        candidate: init.candidate,
        message: `cannot add the remote ICE candidate: ${messageOf(e)}`,
      });
    });
  }

  /** @param {PeerState} peer @param {RTCTrackEvent} event */
  _onTrack(peer, event) {
    if (peer.closed) return;
    let stream = event.streams && event.streams[0];
    if (!stream) {
      if (!peer.fallbackStream) peer.fallbackStream = new MediaStream();
      peer.fallbackStream.addTrack(event.track);
      stream = peer.fallbackStream;
    }
    const mid = event.transceiver ? event.transceiver.mid : null;
    const mapping = this.idMapping[peer.streamId];
    const trackId = (mapping && mid != null && mapping[mid]) || event.track.id;
    const video = this.remoteVideo;
    if (video && video.srcObject !== stream) {
      video.srcObject = stream;
      const playing = video.play && video.play();
      if (playing && playing.catch) playing.catch(() => undefined);
    }
    const obj = { stream, track: event.track, streamId: peer.streamId, trackId };
    this.notifyEventListeners("newTrackAvailable", obj);
    this.notifyEventListeners("newStreamAvailable", obj);
  }

  /** @param {PeerState} peer */
  _onIceState(peer) {
    if (peer.closed) return;
    const state = peer.pc.iceConnectionState;
    this.notifyEventListeners("ice_connection_state_changed", { state, streamId: peer.streamId });
    const watched = peer.mode !== "peer" && (this._published.has(peer.streamId) || this._played.has(peer.streamId));
    peer.connected = state === "connected" || state === "completed";
    if (peer.connected) {
      this._clearWatchdog(peer);
    } else if (state === "failed" || state === "closed") {
      if (watched && this.reconnectIfRequiredFlag) this._reconnect(peer.streamId);
      else if (state === "failed") {
        this.notifyErrorEventListeners("ice_connection_failed", {
          streamId: peer.streamId,
          message: `the connection of ${peer.streamId} failed (ICE)`,
        });
      }
    } else if (state === "disconnected" && watched) {
      this._armWatchdog(peer.streamId, DISCONNECTED_GRACE_MS);
    }
  }

  /** @param {string} streamId @param {number} delay */
  _armWatchdog(streamId, delay) {
    const peer = this._peers.get(streamId);
    if (!peer || peer.mode === "peer" || !this.reconnectIfRequiredFlag) return;
    this._clearWatchdog(peer);
    peer.watchdog = setTimeout(() => {
      peer.watchdog = null;
      // Without the socket nothing can be negotiated; the watchdog is armed again on open.
      if (peer.closed || ICE_ALIVE.includes(peer.pc.iceConnectionState) || !this.isConnected()) return;
      this._log(`${streamId}: ICE is ${peer.pc.iceConnectionState} after ${delay} ms`);
      this._reconnect(streamId);
    }, delay);
  }

  /** @param {PeerState} peer */
  _clearWatchdog(peer) {
    if (peer.watchdog) clearTimeout(peer.watchdog);
    peer.watchdog = null;
  }

  /**
   * Restarts a publish or play whose connection failed: `stop`, then the same publish/play
   * 500 ms later (at most one attempt per 3 s per stream).
   * @param {string} streamId
   */
  _reconnect(streamId) {
    const publishArgs = this._published.get(streamId);
    const playArgs = this._played.get(streamId);
    if (!publishArgs && !playArgs) return;
    if (!this.reconnectIfRequiredFlag || this._retryTimers.has(streamId)) return;
    const since = Date.now() - (this._lastAttempt.get(streamId) || 0);
    if (since < MIN_ATTEMPT_GAP_MS) {
      this._armWatchdog(streamId, MIN_ATTEMPT_GAP_MS - since);
      return;
    }
    this._lastAttempt.set(streamId, Date.now());
    this.notifyEventListeners(publishArgs ? "reconnection_attempt_for_publisher" : "reconnection_attempt_for_player", streamId);
    this._closePeer(streamId);
    if (this.isConnected()) this._send({ command: "stop", streamId });
    const timer = setTimeout(() => {
      this._retryTimers.delete(streamId);
      if (!this.isConnected()) return; // the WebSocket reconnection restarts it
      if (publishArgs && this._published.get(streamId) === publishArgs) this._startPublish(publishArgs, true);
      else if (playArgs && this._played.get(streamId) === playArgs) this._startPlay(playArgs, true);
    }, RETRY_DELAY_MS);
    this._retryTimers.set(streamId, timer);
  }

  /** Ant Media's name: check the connections `delayMs` from now and restart failed ones. @param {number} [delayMs] */
  reconnectIfRequired(delayMs = 3000) {
    for (const id of [...this._published.keys(), ...this._played.keys()]) this._armWatchdog(id, Math.max(0, delayMs));
  }

  /**
   * Closes the connection of `streamId` (without telling the server: use stop() for that);
   * it is not restarted by reconnection.
   * @param {string} streamId
   */
  closePeerConnection(streamId) {
    this._forget(streamId);
    this._closePeer(streamId);
  }

  /** @param {string} streamId */
  _closePeer(streamId) {
    const peer = this._peers.get(streamId);
    this._earlyCandidates.delete(streamId);
    const index = this.playStreamId.indexOf(streamId);
    if (index !== -1) this.playStreamId.splice(index, 1);
    if (this._statsTimers.has(streamId)) this.disableStats(streamId);
    this._statsSamples.delete(streamId);
    if (!peer) return;
    peer.closed = true;
    this._clearWatchdog(peer);
    this._peers.delete(streamId);
    delete this.remotePeerConnection[streamId];
    delete this.idMapping[streamId];
    peer.incoming.clear();
    const pc = peer.pc;
    pc.onicecandidate = null;
    pc.ontrack = null;
    pc.oniceconnectionstatechange = null;
    pc.ondatachannel = null;
    for (const channel of peer.channels) {
      try {
        channel.close();
      } catch (e) {
        this._log("channel close failed", e);
      }
    }
    if (pc.signalingState !== "closed") pc.close();
    this._log(`closed the connection of ${streamId}`);
  }

  /** @param {string} streamId @returns {RTCIceConnectionState | null} */
  iceConnectionState(streamId) {
    const peer = this._peers.get(streamId);
    return peer ? peer.pc.iceConnectionState : null;
  }

  /** @param {string} streamId @returns {RTCSignalingState | null} */
  signallingState(streamId) {
    const peer = this._peers.get(streamId);
    return peer ? peer.pc.signalingState : null;
  }

  // =========================================================================================
  // Data channel
  // =========================================================================================

  /** @param {PeerState} peer @param {RTCDataChannel} channel */
  _initDataChannel(peer, channel) {
    const streamId = peer.streamId;
    channel.binaryType = "arraybuffer";
    peer.channels.push(channel);
    channel.onopen = () => {
      if (peer.closed) return;
      peer.dataChannel = channel;
      /** @type {any} */ (peer.pc).dataChannel = channel;
      this.notifyEventListeners("data_channel_opened", streamId);
    };
    channel.onclose = () => {
      if (peer.dataChannel === channel) peer.dataChannel = null;
      this.notifyEventListeners("data_channel_closed", streamId);
    };
    channel.onerror = (event) => {
      if (peer.closed || channel.readyState === "closed" || channel.readyState === "closing") return;
      const error = /** @type {any} */ (event).error;
      this.notifyErrorEventListeners("data_channel_error", {
        streamId,
        error,
        message: `data channel of ${streamId}: ${error ? messageOf(error) : "error"}`,
      });
    };
    channel.onmessage = (event) => {
      if (peer.closed) return;
      const data = event.data;
      if (typeof data === "string") {
        this.notifyEventListeners("data_received", { streamId, data: sanitize(data) });
      } else if (typeof Blob !== "undefined" && data instanceof Blob) {
        data.arrayBuffer().then((buffer) => this._onBinary(peer, buffer));
      } else {
        this._onBinary(peer, data);
      }
    };
  }

  /**
   * Reassembles chunked binary messages: an 8-byte header Int32[token, totalLength], then
   * chunks of a 4-byte token followed by at most 16000 bytes. Other binary messages are
   * delivered as they came.
   * @param {PeerState} peer @param {ArrayBuffer} buffer
   */
  _onBinary(peer, buffer) {
    const streamId = peer.streamId;
    if (buffer.byteLength < 4) {
      this.notifyEventListeners("data_received", { streamId, data: buffer });
      return;
    }
    const view = new DataView(buffer);
    const token = view.getInt32(0, true);
    const pending = peer.incoming.get(token);
    if (!pending) {
      if (buffer.byteLength !== 8) {
        this.notifyEventListeners("data_received", { streamId, data: buffer });
        return;
      }
      const size = view.getInt32(4, true);
      if (size <= 0) {
        this.notifyEventListeners("data_received", { streamId, data: new ArrayBuffer(0) });
      } else if (size > MAX_INCOMING_BINARY) {
        this.notifyErrorEventListeners("data_channel_error", {
          streamId,
          message: `refused an incoming binary message of ${size} bytes (limit ${MAX_INCOMING_BINARY})`,
        });
      } else {
        peer.incoming.set(token, { size, received: 0, bytes: new Uint8Array(size) });
      }
      return;
    }
    const chunk = new Uint8Array(buffer, 4);
    if (pending.received + chunk.length > pending.size) {
      peer.incoming.delete(token);
      this.notifyErrorEventListeners("data_channel_error", {
        streamId,
        message: `a binary message brought more bytes than the ${pending.size} it announced`,
      });
      return;
    }
    pending.bytes.set(chunk, pending.received);
    pending.received += chunk.length;
    if (pending.received === pending.size) {
      peer.incoming.delete(token);
      this.notifyEventListeners("data_received", { streamId, data: pending.bytes.buffer });
    }
  }

  /**
   * Sends `data` on the data channel of `streamId`'s connection (the publish connection, a
   * play, or a 1-1 call). Text goes as it is; binary (ArrayBuffer, typed array, Blob) is cut
   * into chunks that the receiving SDK reassembles.
   * @param {string} streamId
   * @param {string | ArrayBuffer | ArrayBufferView | Blob} data
   * @returns {Promise<boolean>}
   */
  async sendData(streamId, data) {
    const peer = this._peers.get(streamId);
    const channel = peer ? peer.dataChannel : null;
    if (!peer || !channel || channel.readyState !== "open") {
      this.notifyErrorEventListeners("data_channel_error", {
        streamId,
        message: !peer
          ? `sendData: there is no connection for ${streamId}`
          : `sendData: the data channel of ${streamId} is not open${this.dataChannelEnabled ? "" : " (dataChannelEnabled is false)"}`,
      });
      return false;
    }
    try {
      if (typeof data === "string") {
        channel.send(data);
        return true;
      }
      /** @type {Uint8Array} */
      let bytes;
      if (typeof Blob !== "undefined" && data instanceof Blob) bytes = new Uint8Array(await data.arrayBuffer());
      else if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
      else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      else throw new TypeError("sendData takes a string, an ArrayBuffer, a typed array or a Blob");
      await this._sendBinary(channel, bytes);
      return true;
    } catch (e) {
      this.notifyErrorEventListeners("data_channel_error", { streamId, message: `sendData failed: ${messageOf(e)}` });
      return false;
    }
  }

  /** @param {RTCDataChannel} channel @param {Uint8Array} bytes */
  async _sendBinary(channel, bytes) {
    const token = 1 + Math.floor(Math.random() * 0x7ffffffe);
    const header = new ArrayBuffer(8);
    new DataView(header).setInt32(0, token, true);
    new DataView(header).setInt32(4, bytes.length, true);
    channel.send(header);
    for (let offset = 0; offset < bytes.length; offset += CHUNK_SIZE) {
      const part = bytes.subarray(offset, Math.min(offset + CHUNK_SIZE, bytes.length));
      const chunk = new Uint8Array(part.length + 4);
      new DataView(chunk.buffer).setInt32(0, token, true);
      chunk.set(part, 4);
      if (channel.bufferedAmount > 4 * 1024 * 1024) await this._drained(channel);
      if (channel.readyState !== "open") throw new Error("the data channel closed while sending");
      channel.send(chunk);
    }
  }

  /** @param {RTCDataChannel} channel @returns {Promise<void>} */
  _drained(channel) {
    return new Promise((resolve) => {
      channel.bufferedAmountLowThreshold = 1024 * 1024;
      const done = () => {
        channel.removeEventListener("bufferedamountlow", done);
        channel.removeEventListener("close", done);
        resolve();
      };
      channel.addEventListener("bufferedamountlow", done);
      channel.addEventListener("close", done);
    });
  }

  // =========================================================================================
  // Statistics
  // =========================================================================================

  /**
   * Statistics of `streamId`'s connection (also told as `updated_stats`). For plays:
   * framesDecoded/framesReceived/framesDropped summed over the video tracks, packetsLost,
   * bytesReceived, and per-track figures in inboundRtpList; for publishing: bytesSent,
   * framesEncoded, packetsLost as reported by the server.
   * @param {string} streamId
   * @returns {Promise<AdaptorStats | false>}
   */
  async getStats(streamId) {
    const peer = this._peers.get(streamId);
    if (!peer) {
      this.notifyErrorEventListeners("no_peer_connection", { streamId, message: `getStats: there is no connection for ${streamId}` });
      return false;
    }
    let report;
    try {
      report = await peer.pc.getStats(null);
    } catch (e) {
      this.notifyErrorEventListeners("no_peer_connection", { streamId, message: `getStats failed: ${messageOf(e)}` });
      return false;
    }
    const stats = this._parseStats(streamId, report);
    this.notifyEventListeners("updated_stats", stats);
    return stats;
  }

  /** @param {string} streamId @param {RTCStatsReport} report */
  _parseStats(streamId, report) {
    const s = {
      streamId,
      framesDecoded: 0,
      framesReceived: 0,
      framesDropped: 0,
      framesEncoded: 0,
      totalFramesEncoded: 0,
      packetsLost: 0,
      videoPacketsLost: 0,
      audioPacketsLost: 0,
      packetsReceived: 0,
      videoPacketsReceived: 0,
      audioPacketsReceived: 0,
      packetsSent: 0,
      videoPacketsSent: 0,
      audioPacketsSent: 0,
      totalVideoPacketsSent: 0,
      totalAudioPacketsSent: 0,
      bytesReceived: 0,
      bytesSent: 0,
      totalBytesReceived: 0,
      totalBytesSent: 0,
      frameWidth: 0,
      frameHeight: 0,
      resWidth: 0,
      resHeight: 0,
      srcFps: 0,
      qualityLimitationReason: "",
      videoRoundTripTime: 0,
      audioRoundTripTime: 0,
      videoJitter: 0,
      audioJitter: 0,
      currentRoundTripTime: 0,
      availableOutgoingBitrate: Infinity,
      currentTime: 0,
      /** @type {any[]} */
      inboundRtpList: [],
      averageIncomingBitrate: 0,
      currentIncomingBitrate: 0,
      averageOutgoingBitrate: 0,
      currentOutgoingBitrate: 0,
    };
    const mapping = this.idMapping[streamId] || {};
    report.forEach((/** @type {any} */ v) => {
      if (v.type === "inbound-rtp") {
        s.bytesReceived += v.bytesReceived || 0;
        s.packetsReceived += v.packetsReceived || 0;
        s.packetsLost += v.packetsLost || 0;
        s.currentTime = v.timestamp;
        if (v.kind === "video") {
          s.framesDecoded += v.framesDecoded || 0;
          s.framesReceived += v.framesReceived || 0;
          s.framesDropped += v.framesDropped || 0;
          s.videoPacketsLost += v.packetsLost || 0;
          s.videoPacketsReceived += v.packetsReceived || 0;
          s.videoJitter = v.jitter || 0;
          if (v.frameWidth) s.frameWidth = v.frameWidth;
          if (v.frameHeight) s.frameHeight = v.frameHeight;
        } else if (v.kind === "audio") {
          s.audioPacketsLost += v.packetsLost || 0;
          s.audioPacketsReceived += v.packetsReceived || 0;
          s.audioJitter = v.jitter || 0;
        }
        s.inboundRtpList.push({
          kind: v.kind,
          mid: v.mid,
          trackId: v.mid != null ? mapping[v.mid] : undefined,
          trackIdentifier: v.trackIdentifier,
          bytesReceived: v.bytesReceived,
          packetsReceived: v.packetsReceived,
          packetsLost: v.packetsLost,
          framesDecoded: v.framesDecoded,
          framesReceived: v.framesReceived,
          framesDropped: v.framesDropped,
          framesPerSecond: v.framesPerSecond,
          frameWidth: v.frameWidth,
          frameHeight: v.frameHeight,
          jitter: v.jitter,
          jitterBufferDelay: v.jitterBufferDelay,
          lastPacketReceivedTimestamp: v.lastPacketReceivedTimestamp,
        });
      } else if (v.type === "outbound-rtp") {
        s.bytesSent += v.bytesSent || 0;
        s.packetsSent += v.packetsSent || 0;
        s.currentTime = v.timestamp;
        if (v.kind === "video") {
          s.videoPacketsSent += v.packetsSent || 0;
          s.framesEncoded += v.framesEncoded || 0;
          if (v.frameWidth) s.frameWidth = v.frameWidth;
          if (v.frameHeight) s.frameHeight = v.frameHeight;
          s.qualityLimitationReason = v.qualityLimitationReason || s.qualityLimitationReason;
        } else if (v.kind === "audio") {
          s.audioPacketsSent += v.packetsSent || 0;
        }
      } else if (v.type === "remote-inbound-rtp") {
        // What the server reports about our publish.
        s.packetsLost += v.packetsLost || 0;
        if (v.kind === "video") {
          s.videoPacketsLost += v.packetsLost || 0;
          s.videoRoundTripTime = v.roundTripTime || 0;
          s.videoJitter = v.jitter || 0;
        } else if (v.kind === "audio") {
          s.audioPacketsLost += v.packetsLost || 0;
          s.audioRoundTripTime = v.roundTripTime || 0;
          s.audioJitter = v.jitter || 0;
        }
      } else if (v.type === "media-source" && v.kind === "video") {
        s.resWidth = v.width || 0;
        s.resHeight = v.height || 0;
        s.srcFps = v.framesPerSecond || 0;
      } else if (v.type === "candidate-pair" && v.nominated && v.state === "succeeded") {
        s.currentRoundTripTime = v.currentRoundTripTime || 0;
        if (v.availableOutgoingBitrate !== undefined) s.availableOutgoingBitrate = v.availableOutgoingBitrate / 1000;
      }
    });
    s.totalBytesReceived = s.bytesReceived;
    s.totalBytesSent = s.bytesSent;
    s.totalFramesEncoded = s.framesEncoded;
    s.totalVideoPacketsSent = s.videoPacketsSent;
    s.totalAudioPacketsSent = s.audioPacketsSent;
    // Bit rates in kbit/s: since the first sample, and since the previous one.
    const now = Date.now();
    const first = this._statsSamples.get(streamId);
    if (!first) {
      this._statsSamples.set(streamId, { time: now, bytesSent: s.bytesSent, bytesReceived: s.bytesReceived, last: { time: now, bytesSent: s.bytesSent, bytesReceived: s.bytesReceived } });
    } else {
      const last = first.last;
      const total = (now - first.time) / 1000;
      const recent = (now - last.time) / 1000;
      if (total > 0) {
        s.averageIncomingBitrate = Math.round(((s.bytesReceived - first.bytesReceived) * 8) / total / 1000);
        s.averageOutgoingBitrate = Math.round(((s.bytesSent - first.bytesSent) * 8) / total / 1000);
      }
      if (recent > 0) {
        s.currentIncomingBitrate = Math.round(((s.bytesReceived - last.bytesReceived) * 8) / recent / 1000);
        s.currentOutgoingBitrate = Math.round(((s.bytesSent - last.bytesSent) * 8) / recent / 1000);
      }
      first.last = { time: now, bytesSent: s.bytesSent, bytesReceived: s.bytesReceived };
    }
    return s;
  }

  /** Calls getStats every `periodMs` (each result is told as `updated_stats`). @param {string} streamId @param {number} [periodMs] */
  enableStats(streamId, periodMs = 5000) {
    if (this._statsTimers.has(streamId)) return;
    this._statsTimers.set(
      streamId,
      setInterval(() => {
        if (this._peers.has(streamId)) this.getStats(streamId);
      }, periodMs),
    );
  }

  /** @param {string} streamId */
  disableStats(streamId) {
    const timer = this._statsTimers.get(streamId);
    if (timer) clearInterval(timer);
    this._statsTimers.delete(streamId);
  }

  // =========================================================================================
  // Local media
  // =========================================================================================

  /**
   * Opens the camera/microphone with `constraints` and makes it the local stream (shown in the
   * local video, sent by later publishes). Resolves the stream, or false after reporting the
   * browser's error (NotAllowedError, NotFoundError, ...).
   * @param {MediaStreamConstraints} [constraints]
   * @param {string} [streamId]  when publishing, its tracks are replaced on the fly
   * @returns {Promise<MediaStream | false>}
   */
  async openStream(constraints = this.mediaConstraints, streamId) {
    if (typeof navigator === "undefined" || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this.notifyErrorEventListeners("UnsecureContext", {
        message: "camera and microphone need a secure context (https:// or localhost)",
      });
      return false;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia(constraints);
    } catch (e) {
      const name = e && /** @type {any} */ (e).name ? /** @type {any} */ (e).name : "getUserMediaError";
      this.notifyErrorEventListeners(name, { message: `cannot open the camera/microphone: ${messageOf(e)}`, constraints });
      return false;
    }
    this.mediaConstraints = constraints;
    if (this.localStream && streamId !== undefined) {
      for (const track of stream.getTracks()) await this._replaceLocalTrack(track);
    } else {
      if (this.localStream) for (const track of this.localStream.getTracks()) track.stop();
      this._setLocalStream(stream);
    }
    return /** @type {MediaStream} */ (this.localStream);
  }

  /** @param {MediaStream} stream */
  _setLocalStream(stream) {
    this.localStream = stream;
    for (const track of stream.getVideoTracks()) track.enabled = this.cameraEnabled;
    for (const track of stream.getAudioTracks()) track.enabled = !this.micMuted;
    const video = this.localVideo;
    if (video) {
      video.muted = true;
      video.srcObject = stream;
      const playing = video.play && video.play();
      if (playing && playing.catch) playing.catch(() => undefined);
    }
  }

  /** Stops the camera and microphone. */
  closeStream() {
    this.disableAudioLevelForLocalStream();
    if (this.localStream) for (const track of this.localStream.getTracks()) track.stop();
    this.localStream = null;
    const video = this.localVideo;
    if (video) video.srcObject = null;
  }

  /**
   * Puts `track` in place of the local track of its kind, on every connection that sends it.
   * @param {MediaStreamTrack} track
   */
  async _replaceLocalTrack(track) {
    track.enabled = track.kind === "video" ? this.cameraEnabled : !this.micMuted;
    const local = this.localStream;
    const old = local ? local.getTracks().filter((t) => t.kind === track.kind) : [];
    for (const peer of this._peers.values()) {
      if (peer.mode === "play") continue;
      const sender = peer.pc.getSenders().find((x) => (x.track && x.track.kind === track.kind) || (x.track && old.includes(x.track)));
      if (sender) await sender.replaceTrack(track);
    }
    if (local) {
      for (const t of old) {
        local.removeTrack(t);
        t.stop();
      }
      local.addTrack(track);
      const video = this.localVideo;
      if (video && video.srcObject !== local) video.srcObject = local;
    } else {
      this._setLocalStream(new MediaStream([track]));
    }
  }

  /**
   * Turns the camera off: the local video track is disabled, so black frames are sent.
   * @param {string} [streamId]
   * @returns {Promise<boolean>}
   */
  turnOffLocalCamera(streamId) {
    return Promise.resolve(this._setTrackEnabled("video", false, streamId));
  }

  /** Turns the camera back on. @param {string} [streamId] @returns {Promise<boolean>} */
  turnOnLocalCamera(streamId) {
    return Promise.resolve(this._setTrackEnabled("video", true, streamId));
  }

  /** Mutes the microphone (silence is sent). */
  muteLocalMic() {
    this._setTrackEnabled("audio", false);
  }

  /** Unmutes the microphone. */
  unmuteLocalMic() {
    this._setTrackEnabled("audio", true);
  }

  /** @param {"audio" | "video"} kind @param {boolean} enabled @param {string} [streamId] */
  _setTrackEnabled(kind, enabled, streamId) {
    if (kind === "video") this.cameraEnabled = enabled;
    else this.micMuted = !enabled;
    const tracks = this.localStream ? (kind === "video" ? this.localStream.getVideoTracks() : this.localStream.getAudioTracks()) : [];
    if (tracks.length === 0) {
      this.notifyErrorEventListeners("NoActiveConnection", {
        streamId,
        message: `there is no local ${kind === "video" ? "camera" : "microphone"} track to turn ${enabled ? "on" : "off"}`,
      });
      return false;
    }
    for (const track of tracks) track.enabled = enabled;
    return true;
  }

  /**
   * Switches to another camera (`deviceId`), replacing the track on the fly.
   * @param {string} streamId @param {string} [deviceId]
   * @returns {Promise<boolean>}
   */
  async switchVideoCameraCapture(streamId, deviceId) {
    const base = this.mediaConstraints.video && typeof this.mediaConstraints.video === "object" ? this.mediaConstraints.video : {};
    const video = deviceId ? { ...base, deviceId: { exact: deviceId } } : this.mediaConstraints.video || true;
    return this._switchTrack("video", { video }, streamId);
  }

  /**
   * Switches to another microphone (`deviceId`), replacing the track on the fly.
   * @param {string} streamId @param {string} [deviceId]
   * @returns {Promise<boolean>}
   */
  async switchAudioInputSource(streamId, deviceId) {
    const base = this.mediaConstraints.audio && typeof this.mediaConstraints.audio === "object" ? this.mediaConstraints.audio : {};
    const audio = deviceId ? { ...base, deviceId: { exact: deviceId } } : this.mediaConstraints.audio || true;
    return this._switchTrack("audio", { audio }, streamId);
  }

  /** @param {"audio" | "video"} kind @param {MediaStreamConstraints} constraints @param {string} [streamId] */
  async _switchTrack(kind, constraints, streamId) {
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia(constraints);
    } catch (e) {
      this.notifyErrorEventListeners(/** @type {any} */ (e).name || "getUserMediaError", {
        streamId,
        message: `cannot switch the ${kind === "video" ? "camera" : "microphone"}: ${messageOf(e)}`,
      });
      return false;
    }
    const track = kind === "video" ? stream.getVideoTracks()[0] : stream.getAudioTracks()[0];
    try {
      await this._replaceLocalTrack(track);
    } catch (e) {
      track.stop();
      this.notifyErrorEventListeners("replaceTrackError", { streamId, message: `cannot replace the ${kind} track: ${messageOf(e)}` });
      return false;
    }
    this.mediaConstraints = { ...this.mediaConstraints, [kind]: constraints[kind] };
    return true;
  }

  /**
   * Shares the screen instead of the camera; when the browser's "stop sharing" is used,
   * `screen_share_stopped` is told and the camera comes back.
   * @param {string} streamId
   * @returns {Promise<boolean>}
   */
  async switchDesktopCapture(streamId) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
      this.notifyErrorEventListeners("ScreenSharePermissionDenied", { streamId, message: "this browser cannot share the screen" });
      return false;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: true });
    } catch (e) {
      this.notifyErrorEventListeners("ScreenSharePermissionDenied", { streamId, message: `screen sharing refused: ${messageOf(e)}` });
      return false;
    }
    const track = stream.getVideoTracks()[0];
    track.onended = () => {
      this.notifyEventListeners("screen_share_stopped", streamId);
      this.switchVideoCameraCapture(streamId);
    };
    await this._replaceLocalTrack(track);
    return true;
  }

  /**
   * Applies constraints to the local tracks: `{video: {...}, audio: {...}}`, or video
   * constraints alone.
   * @param {MediaStreamConstraints | MediaTrackConstraints} constraints
   * @returns {Promise<boolean>}
   */
  async applyConstraints(constraints) {
    const local = this.localStream;
    if (!local) {
      this.notifyErrorEventListeners("NoActiveConnection", { message: "applyConstraints: there is no local stream" });
      return false;
    }
    /** @type {any} */
    const c = constraints || {};
    const perKind = "video" in c || "audio" in c ? c : { video: c };
    try {
      for (const kind of ["video", "audio"]) {
        const value = perKind[kind];
        if (!value || typeof value !== "object") continue;
        const tracks = kind === "video" ? local.getVideoTracks() : local.getAudioTracks();
        for (const track of tracks) await track.applyConstraints(value);
        this.mediaConstraints = { ...this.mediaConstraints, [kind]: value };
      }
      return true;
    } catch (e) {
      this.notifyErrorEventListeners(/** @type {any} */ (e).name || "OverconstrainedError", { message: `applyConstraints failed: ${messageOf(e)}` });
      return false;
    }
  }

  /**
   * Caps the video bit rate sent on `streamId`'s connection.
   * @param {number | "unlimited"} bandwidth kbit/s
   * @param {string} streamId
   * @returns {Promise<boolean>}
   */
  async changeBandwidth(bandwidth, streamId) {
    const peer = this._peers.get(streamId);
    const sender = peer ? peer.pc.getSenders().find((x) => x.track && x.track.kind === "video") : undefined;
    if (!sender) {
      this.notifyErrorEventListeners("no_peer_connection", { streamId, message: `changeBandwidth: ${streamId} sends no video` });
      return false;
    }
    const parameters = sender.getParameters();
    if (!parameters.encodings || parameters.encodings.length === 0) parameters.encodings = [{}];
    for (const encoding of parameters.encodings) {
      if (bandwidth === "unlimited") delete encoding.maxBitrate;
      else encoding.maxBitrate = Number(bandwidth) * 1000;
    }
    try {
      await sender.setParameters(parameters);
      return true;
    } catch (e) {
      this.notifyErrorEventListeners("bandwidth_error", { streamId, message: `changeBandwidth failed: ${messageOf(e)}` });
      return false;
    }
  }

  /**
   * Measures the microphone level every `period` ms and calls `levelCallback(level)` with a
   * value from 0 to 1. Stopped by disableAudioLevelForLocalStream() or closeStream().
   * @param {(level: number) => void} levelCallback
   * @param {number} [period]
   * @returns {Promise<boolean>}
   */
  async enableAudioLevelForLocalStream(levelCallback, period = 200) {
    this.disableAudioLevelForLocalStream();
    const track = this.localStream ? this.localStream.getAudioTracks()[0] : undefined;
    if (!track) {
      this.notifyErrorEventListeners("NoActiveConnection", { message: "there is no microphone track to measure" });
      return false;
    }
    const context = new AudioContext();
    const analyser = context.createAnalyser();
    analyser.fftSize = 512;
    context.createMediaStreamSource(new MediaStream([track])).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const timer = setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const x of samples) sum += x * x;
      const level = Math.min(1, Math.sqrt(sum / samples.length) * 4);
      try {
        levelCallback(level);
      } catch (e) {
        console.error("WebRTCAdaptor: the audio level callback threw:", e);
      }
    }, period);
    this._levelMeter = { context, timer };
    return true;
  }

  /** Stops the measurement started by enableAudioLevelForLocalStream(). */
  disableAudioLevelForLocalStream() {
    if (!this._levelMeter) return;
    clearInterval(this._levelMeter.timer);
    this._levelMeter.context.close().catch(() => undefined);
    this._levelMeter = null;
  }

  /**
   * Lists the cameras and microphones; also told as `available_devices`.
   * @returns {Promise<MediaDeviceInfo[]>}
   */
  async getDevices() {
    try {
      const devices = await navigator.mediaDevices.enumerateDevices();
      this.notifyEventListeners("available_devices", devices);
      return devices;
    } catch (e) {
      this.notifyErrorEventListeners("getDevicesError", { message: `cannot list the devices: ${messageOf(e)}` });
      return [];
    }
  }
}
