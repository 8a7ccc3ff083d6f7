// placeholder: the Confero SDK is being written
export class WebRTCAdaptor {}
