/**
 * The two ways a frontend request can fail.
 *
 * @module
 */

/**
 * The request was malformed (wrong payload size, ring index out of range,
 * missing or extra fds, unknown request code). The frontend is broken or
 * hostile: its session is failed and closed.
 */
export class ProtocolError extends Error {
  /**
   * Make the error.
   *
   * @param message What was wrong, naming the request and the value.
   */
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

/**
 * The request was well formed but the device refuses it (features it does
 * not offer, a ring size above its maximum, a driver's `start` failing). With
 * `REPLY_ACK` the frontend gets a non-zero ack and the session goes on;
 * without it the session is failed.
 */
export class RequestRefused extends Error {
  /**
   * Make the error.
   *
   * @param message Why, and what the frontend should do instead.
   */
  constructor(message: string) {
    super(message);
    this.name = "RequestRefused";
  }
}
