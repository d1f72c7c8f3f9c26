/**
 * The vhost-user transport: server and client modes, sessions, framing.
 *
 * @module
 */

export * from "./server.ts";
export * from "./client.ts";
export { OFFERED_PROTOCOL_FEATURES, VhostUserSession } from "./session.ts";
export * from "./message.ts";
export { MAX_UNSENT_BYTES, MessageSocket } from "./connection.ts";
