// Reference CIDs for tests/content.rs, from the IPFS JavaScript importer
// configured as kubo's `ipfs add --cid-version=1 --raw-leaves [-r]`:
// CIDv1, raw leaves, fixed 256 KiB chunks, balanced layout with at most
// 174 links per node, a single-chunk file reduced to its leaf, no wrapping
// directory, hidden files left out (kubo's default without --hidden).
//
//   node unixfs-cids.mjs [--chunk-bytes N] [--max-links N] PATH...
//
// Prints one JSON object per PATH: {"path": PATH, "cid": "bafy..."}.
import { createReadStream, readdirSync, statSync } from 'node:fs'
import { basename, join } from 'node:path'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'

const args = process.argv.slice(2)
let chunkSize = 262144
let maxChildrenPerNode = 174
const paths = []
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--chunk-bytes') chunkSize = Number(args[++i])
  else if (args[i] === '--max-links') maxChildrenPerNode = Number(args[++i])
  else paths.push(args[i])
}

function * entries (dir, prefix) {
  yield { path: prefix }
  for (const name of readdirSync(dir).sort()) {
    if (name.startsWith('.')) continue
    const full = join(dir, name)
    const rel = `${prefix}/${name}`
    if (statSync(full).isDirectory()) yield * entries(full, rel)
    else yield { path: rel, content: createReadStream(full) }
  }
}

for (const path of paths) {
  const name = basename(path)
  const source = statSync(path).isDirectory()
    ? entries(path, name)
    : [{ path: name, content: createReadStream(path) }]
  let root
  for await (const entry of importer(source, new MemoryBlockstore(), {
    cidVersion: 1,
    rawLeaves: true,
    reduceSingleLeafToSelf: true,
    wrapWithDirectory: false,
    chunker: fixedSize({ chunkSize }),
    layout: balanced({ maxChildrenPerNode })
  })) {
    if (entry.path === name) root = entry.cid.toString()
  }
  console.log(JSON.stringify({ path, cid: root }))
}
