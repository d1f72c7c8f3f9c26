// docs/libvirt-domain.xml, the guest served by the daemon that docs/daemon.md
// shows, is a valid libvirt domain (virt-xml-validate, Debian
// libvirt-clients, which runs xmllint from libxml2-utils), and its
// vhost-user interface is the one the daemon's device serves.

import assert from "node:assert/strict";
import { requirePeer } from "../support/peers.ts";

const XML = new URL("../../docs/libvirt-domain.xml", import.meta.url).pathname;
// Skips (saying which package to install) outside CI; with CI=true a missing tool fails.
const validate = await requirePeer("virt-xml-validate");
const xmllint = validate === null ? null : await requirePeer("xmllint");

async function check(path: string) {
  const out = await new Deno.Command(validate!, {
    args: [path, "domain"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, text: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

Deno.test({
  name: "the libvirt domain example validates, and a broken one does not",
  ignore: validate === null || xmllint === null,
  async fn() {
    const ok = await check(XML);
    assert.equal(ok.code, 0, ok.text);
    assert.match(ok.text, /validates/);
    const xml = Deno.readTextFileSync(XML);
    assert.match(
      xml,
      /<interface type='vhostuser'>[\s\S]*<source type='unix' path='\/run\/vhost-mdev\/net0\.sock' mode='client'>/,
    );
    assert.match(xml, /<access mode='shared' ?\/>/, "vhost-user needs shared guest memory");
    // The validator can fail: the same file with an interface type libvirt does not know.
    const dir = Deno.makeTempDirSync();
    try {
      Deno.writeTextFileSync(
        `${dir}/bad.xml`,
        xml.replace("type='vhostuser'", "type='vhost-mdev'"),
      );
      const bad = await check(`${dir}/bad.xml`);
      assert.notEqual(bad.code, 0, bad.text);
      assert.match(bad.text, /fails to validate/);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
