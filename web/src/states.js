// How an update channel (realtime or polling) is doing: the connection indicator's data-state.
export const STATE = Object.freeze({
  CONNECTED: "connected",
  RECONNECTING: "reconnecting",
  DISCONNECTED: "disconnected",
});
