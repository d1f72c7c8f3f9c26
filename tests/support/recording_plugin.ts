/**
 * The recording driver as a plugin module, for `serve --driver <path>`.
 *
 * @module
 */
import { recordingDriver } from "./recording_driver.ts";

/** A recording driver (its recordings stay in the serving process). */
export const driver = recordingDriver().driver;
