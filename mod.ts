/**
 * vhost-mdev: the SDK's public face. Re-exports `@vhost-mdev/sdk`.
 *
 * @module
 */
export * from "@vhost-mdev/sdk";
