/**
 * Type declarations for Confero's JavaScript SDK (webrtc_adaptor.js): the same class name,
 * options, methods and callbacks as Ant Media's WebRTCAdaptor, for Confero's signaling.
 * See docs/sdk.md.
 */

/** The object form of play() (Ant Media's playStream()). */
export interface PlayParameters {
  streamId: string;
  token?: string;
  /** The room the stream belongs to (legacy conference) or the room itself for a room play. */
  roomId?: string;
  /** Member stream ids to receive in a room play; `"!id"` excludes one. */
  enableTracks?: string[];
  subscriberId?: string;
  subscriberCode?: string;
  subscriberName?: string;
  metaData?: string | object;
  role?: string;
  disableTracksByDefault?: boolean;
}

/** Events told to `callback(info, obj)`: local ones and every server notification's definition. */
export type AdaptorEvent =
  | "initialized"
  | "closed"
  | "pong"
  | "publish_started"
  | "publish_finished"
  | "play_started"
  | "play_finished"
  | "joinedTheRoom"
  | "leavedFromRoom"
  | "streamJoined"
  | "streamLeaved"
  | "roomInformation"
  | "streamInformation"
  | "trackList"
  | "joined"
  | "leaved"
  | "peerMessageCommand"
  | "newStreamAvailable"
  | "newTrackAvailable"
  | "data_channel_opened"
  | "data_channel_closed"
  | "data_received"
  | "ice_connection_state_changed"
  | "reconnection_attempt_for_publisher"
  | "reconnection_attempt_for_player"
  | "updated_stats"
  | "screen_share_stopped"
  | "available_devices"
  | (string & {});

/** `obj` of newTrackAvailable / newStreamAvailable. */
export interface NewTrackEvent {
  stream: MediaStream;
  track: MediaStreamTrack;
  /** The connection's stream id (the room for a room play, the call id in a 1-1 call). */
  streamId: string;
  /** `idMapping[streamId][mid]`, e.g. `"ARDAMSv" + memberStreamId`; the track's id when the server gave no mapping. */
  trackId: string;
}

/** `obj` of data_received: text as sent, binary reassembled into one ArrayBuffer. */
export interface DataReceivedEvent {
  streamId: string;
  data: string | ArrayBuffer;
}

/** `obj` of ice_connection_state_changed. */
export interface IceStateEvent {
  state: RTCIceConnectionState;
  streamId: string;
}

/** What getStats() resolves (also told as updated_stats). Bit rates are kbit/s. */
export interface AdaptorStats {
  streamId: string;
  framesDecoded: number;
  framesReceived: number;
  framesDropped: number;
  framesEncoded: number;
  totalFramesEncoded: number;
  packetsLost: number;
  videoPacketsLost: number;
  audioPacketsLost: number;
  packetsReceived: number;
  videoPacketsReceived: number;
  audioPacketsReceived: number;
  packetsSent: number;
  videoPacketsSent: number;
  audioPacketsSent: number;
  totalVideoPacketsSent: number;
  totalAudioPacketsSent: number;
  bytesReceived: number;
  bytesSent: number;
  totalBytesReceived: number;
  totalBytesSent: number;
  frameWidth: number;
  frameHeight: number;
  resWidth: number;
  resHeight: number;
  srcFps: number;
  qualityLimitationReason: string;
  videoRoundTripTime: number;
  audioRoundTripTime: number;
  videoJitter: number;
  audioJitter: number;
  currentRoundTripTime: number;
  availableOutgoingBitrate: number;
  currentTime: number;
  inboundRtpList: Array<{
    kind: string;
    mid?: string;
    trackId?: string;
    trackIdentifier?: string;
    bytesReceived?: number;
    packetsReceived?: number;
    packetsLost?: number;
    framesDecoded?: number;
    framesReceived?: number;
    framesDropped?: number;
    framesPerSecond?: number;
    frameWidth?: number;
    frameHeight?: number;
    jitter?: number;
    jitterBufferDelay?: number;
    lastPacketReceivedTimestamp?: number;
  }>;
  averageIncomingBitrate: number;
  currentIncomingBitrate: number;
  averageOutgoingBitrate: number;
  currentOutgoingBitrate: number;
}

export type AdaptorCallback = (info: AdaptorEvent, obj?: any) => void;
/** `message` is the server's error message, or `{streamId?, message}` for local errors. */
export type AdaptorErrorCallback = (error: string, message?: any) => void;

export interface WebRTCAdaptorOptions {
  /** `ws(s)://host:port/{App}/websocket`; `?target=origin|edge` is added. */
  websocket_url?: string;
  websocketURL?: string;
  /** Default `{video: true, audio: true}`. */
  mediaConstraints?: MediaStreamConstraints;
  /** Passing `iceServers` skips getIceServerConfig. */
  peerconnection_config?: RTCConfiguration;
  /** Accepted for compatibility; unused. */
  sdp_constraints?: object;
  localVideoId?: string;
  localVideoElement?: HTMLVideoElement;
  remoteVideoId?: string;
  remoteVideoElement?: HTMLVideoElement;
  /** No camera/microphone; the WebSocket asks for `target=edge`. Default false. */
  isPlayMode?: boolean;
  /** Publish a data channel only. Default false. */
  onlyDataChannel?: boolean;
  /** Default true. */
  dataChannelEnabled?: boolean;
  debug?: boolean;
  callback?: AdaptorCallback;
  callbackError?: AdaptorErrorCallback;
  /** Default `["udp", "tcp"]`. */
  candidateTypes?: string[];
  /** Restart failed publishes/plays. Default true. */
  reconnectIfRequiredFlag?: boolean;
  /** ICE must be checking/connected this long after publish()/play(), else the stream restarts. Default 5000. */
  connectTimeoutMs?: number;
  isMultiPeer?: boolean;
  [option: string]: unknown;
}

/** `undefined` when absent, `true` when present without a value, otherwise the decoded value. */
export function getUrlParameter(name: string, search?: string): string | true | undefined;

export class WebRTCAdaptor {
  static readonly VERSION: string;

  constructor(initialValues: WebRTCAdaptorOptions);

  // options (as given, with defaults)
  websocket_url: string | null;
  websocketURL: string | null;
  mediaConstraints: MediaStreamConstraints;
  peerconnection_config: RTCConfiguration;
  sdp_constraints: object;
  localVideoId: string | undefined;
  remoteVideoId: string | undefined;
  localVideoElement: HTMLVideoElement | null;
  remoteVideoElement: HTMLVideoElement | null;
  isPlayMode: boolean;
  onlyDataChannel: boolean;
  dataChannelEnabled: boolean;
  debug: boolean;
  callback: AdaptorCallback | null;
  callbackError: AdaptorErrorCallback | null;
  candidateTypes: string[];
  reconnectIfRequiredFlag: boolean;
  connectTimeoutMs: number;
  isMultiPeer: boolean;
  multiPeerStreamId: string | null;
  userDefinedIceServers: boolean;

  // state
  remotePeerConnection: Record<string, RTCPeerConnection>;
  idMapping: Record<string, Record<string, string>>;
  playStreamId: string[];
  publishStreamId: string | null;
  roomName: string | null;
  localStream: MediaStream | null;
  cameraEnabled: boolean;
  micMuted: boolean;
  publishToken: string | undefined;
  playToken: string | undefined;
  readonly localVideo: HTMLVideoElement | null;
  readonly remoteVideo: HTMLVideoElement | null;

  // set-up and events
  initialize(): Promise<void>;
  addEventListener(listener: (info: string, obj?: any) => void): void;
  addErrorEventListener(listener: (error: string, message?: any) => void): void;
  notifyEventListeners(info: string, obj?: any): void;
  notifyErrorEventListeners(error: string, message?: any): void;

  // WebSocket
  checkWebSocketConnection(): void;
  isConnected(): boolean;
  closeWebSocket(): void;

  // publish / play
  publish(
    streamId: string,
    token?: string,
    subscriberId?: string,
    subscriberCode?: string,
    streamName?: string,
    mainTrack?: string,
    metaData?: string | object,
    role?: string,
  ): void;
  play(parameters: PlayParameters): void;
  play(
    streamId: string,
    token?: string,
    roomId?: string,
    enableTracks?: string[],
    subscriberId?: string,
    subscriberCode?: string,
    metaData?: string | object,
    role?: string,
  ): void;
  playStream(parameters: PlayParameters): void;
  stop(streamId: string): void;

  // rooms
  joinRoom(roomName: string, streamId?: string, mode?: string, streamName?: string, role?: string, metadata?: string | object): void;
  leaveFromRoom(roomName: string, streamId?: string): void;
  getRoomInfo(roomName: string, streamId?: string): void;
  enableTrack(mainTrackId: string, trackId: string, enabled: boolean): void;
  getTrackList(streamId: string, token?: string): void;
  getTracks(streamId: string, token?: string): void;
  getStreamInfo(streamId: string): void;
  setMaxVideoTrackCount(streamId: string, maxTrackCount: number): void;
  updateAudioLevel(streamId: string, value: number): Promise<boolean>;
  toggleVideo(streamId: string, trackId: string, enabled: boolean): void;
  toggleAudio(streamId: string, trackId: string, enabled: boolean): void;
  forceStreamQuality(streamId: string, resolution: number | "auto"): void;
  updateStreamMetaData(streamId: string, metaData: string | object): void;
  getBroadcastObject(streamId: string): void;

  // 1-1 calls
  join(streamId: string): void;
  leave(streamId: string): void;
  peerMessage(streamId: string, definition: string, data: any): void;

  // connections
  reconnectIfRequired(delayMs?: number): void;
  closePeerConnection(streamId: string): void;
  iceConnectionState(streamId: string): RTCIceConnectionState | null;
  signallingState(streamId: string): RTCSignalingState | null;

  // data channel
  sendData(streamId: string, data: string | ArrayBuffer | ArrayBufferView | Blob): Promise<boolean>;

  // statistics
  getStats(streamId: string): Promise<AdaptorStats | false>;
  enableStats(streamId: string, periodMs?: number): void;
  disableStats(streamId: string): void;

  // local media
  openStream(constraints?: MediaStreamConstraints, streamId?: string): Promise<MediaStream | false>;
  closeStream(): void;
  turnOffLocalCamera(streamId?: string): Promise<boolean>;
  turnOnLocalCamera(streamId?: string): Promise<boolean>;
  muteLocalMic(): void;
  unmuteLocalMic(): void;
  switchVideoCameraCapture(streamId: string, deviceId?: string): Promise<boolean>;
  switchAudioInputSource(streamId: string, deviceId?: string): Promise<boolean>;
  switchDesktopCapture(streamId: string): Promise<boolean>;
  applyConstraints(constraints: MediaStreamConstraints | MediaTrackConstraints): Promise<boolean>;
  changeBandwidth(bandwidth: number | "unlimited", streamId: string): Promise<boolean>;
  enableAudioLevelForLocalStream(levelCallback: (level: number) => void, period?: number): Promise<boolean>;
  disableAudioLevelForLocalStream(): void;
  getDevices(): Promise<MediaDeviceInfo[]>;
}
