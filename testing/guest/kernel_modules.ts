/**
 * Kernel module metadata without `modinfo`/`depmod`: a `.ko` is an ELF
 * relocatable whose `.modinfo` section holds NUL-separated `key=value`
 * strings (`name=virtio_net`, `depends=virtio,virtio_ring,net_failover`).
 * The guest's busybox `insmod` loads one file and resolves nothing, so the
 * host computes the load order here: every module after its dependencies.
 *
 * @module
 */

/** The `.modinfo` strings of a module, as key -> values (a key may repeat). */
export function readModinfo(ko: Uint8Array): Map<string, string[]> {
  const v = new DataView(ko.buffer, ko.byteOffset, ko.byteLength);
  if (ko.length < 64 || v.getUint32(0) !== 0x7f454c46 || ko[4] !== 2) {
    throw new Error("not an ELF64 kernel module (a compressed .ko must be decompressed first)");
  }
  const shoff = Number(v.getBigUint64(40, true));
  const shentsize = v.getUint16(58, true);
  const shnum = v.getUint16(60, true);
  const shstrndx = v.getUint16(62, true);
  if (shoff + shnum * shentsize > ko.length || shstrndx >= shnum) {
    throw new Error("kernel module has a section table outside the file");
  }
  const section = (i: number) => {
    const at = shoff + i * shentsize;
    return {
      name: v.getUint32(at, true),
      offset: Number(v.getBigUint64(at + 24, true)),
      size: Number(v.getBigUint64(at + 32, true)),
    };
  };
  const strtab = section(shstrndx);
  const decoder = new TextDecoder();
  const cstring = (at: number) => {
    let end = at;
    while (end < ko.length && ko[end] !== 0) end++;
    return decoder.decode(ko.subarray(at, end));
  };
  const info = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (cstring(strtab.offset + s.name) !== ".modinfo") continue;
    if (s.offset + s.size > ko.length) throw new Error(".modinfo lies outside the file");
    for (const entry of decoder.decode(ko.subarray(s.offset, s.offset + s.size)).split("\0")) {
      const eq = entry.indexOf("=");
      if (eq <= 0) continue;
      const key = entry.slice(0, eq);
      const list = info.get(key) ?? [];
      list.push(entry.slice(eq + 1));
      info.set(key, list);
    }
    return info;
  }
  throw new Error("kernel module has no .modinfo section");
}

/** Module names compare with `-` and `_` as the same character, as the kernel does. */
export function moduleKey(name: string): string {
  return name.replace(/\.ko$/, "").replaceAll("-", "_");
}

/** The modules `ko` depends on (its `depends=` list), as keys. */
export function moduleDepends(ko: Uint8Array): string[] {
  const deps = readModinfo(ko).get("depends")?.[0] ?? "";
  return deps.split(",").filter((d) => d !== "").map(moduleKey);
}

/**
 * Order `wanted` plus everything they depend on so that each module comes
 * after its dependencies, keeping `wanted`'s order otherwise.
 *
 * @param wanted module names the caller wants loaded
 * @param dependsOf the dependency keys of a module key; throws when unknown
 * @returns module keys in load order
 */
export function loadOrder(
  wanted: readonly string[],
  dependsOf: (key: string) => readonly string[],
): string[] {
  const order: string[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (key: string, path: string[]) => {
    const s = state.get(key);
    if (s === "done") return;
    if (s === "visiting") {
      throw new Error(
        `kernel modules depend on each other in a loop: ${[...path, key].join(" -> ")}`,
      );
    }
    state.set(key, "visiting");
    for (const dep of dependsOf(key)) visit(dep, [...path, key]);
    state.set(key, "done");
    order.push(key);
  };
  for (const name of wanted) visit(moduleKey(name), []);
  return order;
}
