// Helpers shared by Confero's sample pages: where the WebSocket is, query parameters, and a
// visible status line and error list (so nobody has to open the console to see what happened).

/** The application name: the first segment of the page's path (`/WebRTCAppEE/conference.html`). */
export function appName() {
  return location.pathname.split("/").filter(Boolean)[0] || "WebRTCAppEE";
}

/** `ws(s)://host[:port]/{App}/websocket` for the page's own server. */
export function websocketURL() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/${appName()}/websocket`;
}

/** A query parameter, or `fallback` when it is absent or empty. */
export function param(name, fallback = "") {
  const value = new URLSearchParams(location.search).get(name);
  return value === null || value === "" ? fallback : value;
}

/** A query parameter that is `undefined` when absent (for optional SDK arguments such as token). */
export function optionalParam(name) {
  const value = new URLSearchParams(location.search).get(name);
  return value === null || value === "" ? undefined : value;
}

const FRIENDLY = {
  NotFoundError: "No camera or microphone was found, or access to them is blocked.",
  NotReadableError: "The camera or microphone is in use by another program.",
  TrackStartError: "The camera or microphone is in use by another program.",
  OverconstrainedError: "No camera or microphone matches the requested constraints.",
  ConstraintNotSatisfiedError: "No camera or microphone matches the requested constraints.",
  NotAllowedError: "Access to the camera and microphone was denied.",
  PermissionDeniedError: "Access to the camera and microphone was denied.",
  SecurityError: "The browser refused camera/microphone access for this page.",
  UnsecureContext: "The browser allows camera and microphone only on https:// pages or on localhost.",
  WebSocketNotSupported: "This browser does not support WebSockets.",
  WebSocketNotConnected: "Not connected to the server. Reload the page to reconnect.",
  no_stream_exist: "That stream is not being published right now.",
  stream_not_exist_or_not_streaming: "That stream is not being published right now.",
  streamIdInUse: "That stream id is already in use. Choose another one.",
  already_publishing: "This page is already publishing that stream.",
  already_playing: "This page is already playing that stream.",
  invalidStreamName: "Stream ids may contain only letters, digits, '_', '.' and '-'.",
  noStreamNameSpecified: "A stream id is required.",
  unauthorized_access: "The server refused the request: a valid token is required (add ?token=... to the address).",
  not_allowed_unregistered_streams: "This application accepts only streams created beforehand (REST).",
  no_room_specified: "A room id is required.",
  room_not_active_or_expired: "This room is not open at this time.",
  stream_not_active_or_expired: "This stream is not scheduled to run at this time.",
  no_active_streams_in_room: "Nobody is publishing in this room yet.",
  no_peer_associated_before: "The other side of the call is not connected.",
  data_channel_error: "The data channel (chat) failed.",
  data_message_too_large: "The message is too large to send.",
  publishTimeoutError: "The server received no media in time; publishing stopped.",
  highResourceUsage: "The server is too busy right now. Try again later.",
  viewerLimitReached: "This stream has reached its viewer limit.",
  notSetRemoteDescription: "The browser and the server could not agree on the media session.",
  notSetLocalDescription: "The browser and the server could not agree on the media session.",
  protocol_not_supported: "The WebSocket URL must start with ws:// or wss://.",
};

/** Turns an SDK error (a definition string, an Error, or an object) into text for a person. */
export function describeError(error, message) {
  let name;
  let detail = "";
  if (typeof error === "string") name = error;
  else if (error && typeof error === "object") {
    name = error.definition || error.name || error.message || JSON.stringify(error);
    if (error.message && error.message !== name) detail = error.message;
  } else name = String(error);
  if (message && typeof message === "object") {
    detail = message.information || message.message || "";
    if (message.streamId && !detail) detail = `stream ${message.streamId}`;
  } else if (message !== undefined && message !== null && message !== "") {
    detail = String(message);
  }
  const friendly = Object.keys(FRIENDLY).find((key) => name.includes(key));
  const text = friendly ? FRIENDLY[friendly] : name;
  return { name, text: detail && detail !== text ? `${text} (${detail})` : text };
}

/**
 * The page's status line and error list. `status()` replaces the status line; `error()` adds an
 * entry to the visible error list (newest first) and keeps it for the test hooks.
 */
export class Notices {
  constructor(statusElement, errorsElement) {
    this.statusElement = statusElement;
    this.errorsElement = errorsElement;
    this.errors = [];
    this.lastStatus = "";
    window.addEventListener("error", (event) => this.error(event.message || String(event.error)));
    window.addEventListener("unhandledrejection", (event) => {
      this.error(event.reason);
    });
  }

  status(text, kind = "info") {
    this.lastStatus = text;
    this.statusElement.textContent = text;
    this.statusElement.dataset.kind = kind;
  }

  /** Shows an error; returns its text. Repeats of the newest error only bump its count. */
  error(error, message) {
    const { name, text } = describeError(error, message);
    const newest = this.errors[this.errors.length - 1];
    if (newest && newest.text === text) {
      newest.count += 1;
      newest.element.querySelector(".count").textContent = ` ×${newest.count}`;
      return text;
    }
    const item = document.createElement("li");
    const time = document.createElement("time");
    time.textContent = new Date().toLocaleTimeString();
    const body = document.createElement("span");
    body.textContent = text;
    const count = document.createElement("span");
    count.className = "count";
    const close = document.createElement("button");
    close.type = "button";
    close.className = "dismiss";
    close.title = "Dismiss";
    close.textContent = "×";
    close.addEventListener("click", () => item.remove());
    item.append(time, " ", body, count, close);
    item.dataset.error = name;
    this.errorsElement.prepend(item);
    this.errorsElement.hidden = false;
    this.errors.push({ name, text, count: 1, element: item });
    return text;
  }

  /** The errors as plain data for `window.conferoPage.state()`. */
  list() {
    return this.errors.map(({ name, text, count }) => ({ name, text, count }));
  }
}

/** Shorthand for document.getElementById. */
export const $ = (id) => document.getElementById(id);

/** Current SDK peer-connection state names, e.g. for status lines. */
export function iceText(state) {
  return (
    {
      new: "connecting…",
      checking: "connecting…",
      connected: "connected",
      completed: "connected",
      disconnected: "connection interrupted",
      failed: "connection failed",
      closed: "closed",
    }[state] || state
  );
}

/**
 * Create the page's WebRTCAdaptor; a failure (no WebSocket support, bad options) is shown on the
 * page instead of vanishing into the console.
 * @param {any} WebRTCAdaptor the SDK's class
 * @param {Notices} notices the page's status and error area
 * @param {object} options constructor options (websocket_url defaults to this application's)
 * @returns {any} the adaptor, or null when it could not start
 */
export function startAdaptor(WebRTCAdaptor, notices, options) {
  try {
    return new WebRTCAdaptor({ websocket_url: websocketURL(), debug: false, ...options });
  } catch (error) {
    notices.error(error);
    notices.status("The page could not start.", "error");
    return null;
  }
}

/**
 * The page's test and debugging hook: window.conferoPage.state() and friends.
 * @param {object} state the page's state object
 * @param {Notices} notices the page's status and error area
 * @param {object} extra more functions to expose (remoteIds, adaptor, ...)
 */
export function exposePage(state, notices, extra) {
  window.conferoPage = {
    state: () => ({ ...state, errors: notices.list(), status: notices.lastStatus }),
    ...extra,
  };
}
