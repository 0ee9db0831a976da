// Exports the schemas in src/*.type.js as self-contained JSON Schema documents.
//
// Run by `cargo xtask schemas` (which writes the files and generates the Rust types);
// by hand: `node ui/types/export.js` prints {"<Name>": "<contents of schemas/<Name>.schema.json>", ...}.
//
// Each document is bundled: a `$ref` to another file's schema (by its `$id`, optionally with
// `#/$defs/<Def>`) is replaced by a local `#/$defs/<Name>` ref, and the referenced schema is
// copied into `$defs` (with its own `$defs` hoisted beside it), so every document validates on
// its own and code generators need no external references. The module's `invalidExamples`
// export is kept under `x-invalid-examples`. The conventions the tests and generators rely on
// are checked here, and break the export when not followed.

import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isDeepStrictEqual } from 'node:util';

const ID_PREFIX = 'urn:views-gateway:schemas:';
const DRAFT = 'https://json-schema.org/draft/2020-12/schema';
const SUFFIX = '.type.js';

const srcDir = join(dirname(fileURLToPath(import.meta.url)), 'src');

class ExportError extends Error {}

function fail(where, what) {
  throw new ExportError(`${where}: ${what}`);
}

const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Checks the conventions of one module's schema. */
function checkConventions(file, name, schema, invalidExamples) {
  if (!isObject(schema)) fail(file, 'the default export is not a schema object');
  if (schema.$schema !== DRAFT) fail(file, `$schema is not ${DRAFT}`);
  if (schema.$id !== ID_PREFIX + name) fail(file, `$id is not ${ID_PREFIX + name}`);
  if (schema.title !== name) fail(file, `title is not ${name} (the file's name)`);
  if (typeof schema.description !== 'string') fail(file, 'the schema has no description');
  if (!Array.isArray(schema.examples) || schema.examples.length === 0) fail(file, 'the schema has no examples');
  if (!Array.isArray(invalidExamples) || invalidExamples.length === 0) {
    fail(file, 'the module has no `invalidExamples` export (values the schema must reject)');
  }
  for (const [def, sub] of Object.entries(schema.$defs ?? {})) {
    if (sub.title !== def) fail(`${file} $defs/${def}`, `title is not ${def}`);
    if (typeof sub.description !== 'string') fail(`${file} $defs/${def}`, 'no description');
  }
  const walk = (node, path) => {
    if (Array.isArray(node)) return node.forEach((v, i) => walk(v, `${path}/${i}`));
    if (!isObject(node)) return;
    for (const [key, value] of Object.entries(node)) {
      if (key === 'examples' || key === 'default' || key === 'const' || key === 'enum') continue;
      if (key === 'pattern') {
        // JSON Schema patterns are ECMA-262 regular expressions (as with the "u" flag).
        try {
          new RegExp(value, 'u');
        } catch (error) {
          fail(file, `${path}/pattern is not an ECMA-262 regular expression: ${error.message}`);
        }
      }
      if (key === 'properties') {
        for (const [prop, sub] of Object.entries(value)) {
          if (typeof sub?.description !== 'string') fail(file, `property ${path}/properties/${prop} has no description`);
        }
      }
      walk(value, `${path}/${key}`);
    }
  };
  walk(schema, '#');
}

/** Splits a `$ref` into the document id (empty for a local ref) and the fragment. */
function splitRef(ref) {
  const hash = ref.indexOf('#');
  return hash < 0 ? [ref, ''] : [ref.slice(0, hash), ref.slice(hash + 1)];
}

/** The name a fragment of `doc` gets in a bundle's `$defs`. */
function defName(where, doc, fragment) {
  if (fragment === '') return doc.title;
  const match = /^\/\$defs\/([A-Za-z][A-Za-z0-9]*)$/.exec(fragment);
  if (!match) fail(where, `unsupported $ref fragment #${fragment} (use the whole schema or #/$defs/<Name>)`);
  if (!doc.$defs?.[match[1]]) fail(where, `${doc.$id} has no $defs/${match[1]}`);
  return match[1];
}

/** Bundles `root` with everything it references from `byId`. */
function bundle(file, root, byId) {
  const out = structuredClone(root);
  const origin = new Map(); // $defs name -> the `<id>#<fragment>` it was copied from
  for (const def of Object.keys(root.$defs ?? {})) origin.set(def, `${root.$id}#/$defs/${def}`);

  // Makes `#/$defs/<name>` in the bundle hold `fragment` of `doc`; returns the local ref.
  const include = (where, doc, fragment) => {
    const name = defName(where, doc, fragment);
    const key = `${doc.$id}#${fragment}`;
    if (doc === root && fragment === '') return '#';
    const known = origin.get(name);
    if (known === key) return `#/$defs/${name}`;
    if (known) fail(where, `$defs/${name} would be both ${known} and ${key}`);
    origin.set(name, key);
    let copy;
    if (fragment === '') {
      const { $schema: _s, $id: _i, $defs: _d, ...rest } = structuredClone(doc);
      copy = rest;
    } else {
      copy = structuredClone(doc.$defs[name]);
    }
    out.$defs ??= {};
    out.$defs[name] = copy;
    rewrite(copy, doc, `${where} -> ${key}`);
    return `#/$defs/${name}`;
  };

  // Rewrites the refs in `node`, which was copied from `doc`.
  const rewrite = (node, doc, where) => {
    if (Array.isArray(node)) return node.forEach((v) => rewrite(v, doc, where));
    if (!isObject(node)) return;
    for (const [key, value] of Object.entries(node)) {
      if (key === 'examples' || key === 'default' || key === 'const' || key === 'enum') continue;
      if (key === '$ref') {
        const [id, fragment] = splitRef(value);
        if (id === '') {
          // Local to `doc`: already in place for the root, included for copies.
          if (doc !== root) node.$ref = include(where, doc, fragment);
        } else {
          const target = byId.get(id);
          if (!target) fail(where, `$ref ${value} names no schema in ${srcDir}`);
          node.$ref = include(where, target, fragment);
        }
        continue;
      }
      rewrite(value, doc, where);
    }
  };

  rewrite(out, root, file);
  return out;
}

async function main() {
  const files = readdirSync(srcDir)
    .filter((f) => f.endsWith(SUFFIX))
    .sort();
  const modules = [];
  for (const file of files) {
    const name = file.slice(0, -SUFFIX.length);
    const module = await import(pathToFileURL(join(srcDir, file)).href);
    checkConventions(file, name, module.default, module.invalidExamples);
    modules.push({ file, name, schema: module.default, invalidExamples: module.invalidExamples });
  }
  const byId = new Map(modules.map((m) => [m.schema.$id, m.schema]));
  const output = {};
  for (const { file, name, schema, invalidExamples } of modules) {
    const bundled = bundle(file, schema, byId);
    bundled['x-invalid-examples'] = structuredClone(invalidExamples);
    const text = `${JSON.stringify(bundled, null, 2)}\n`;
    // Whatever JSON cannot hold (undefined, functions, NaN) must not silently vanish.
    if (!isDeepStrictEqual(JSON.parse(text), bundled)) fail(file, 'the schema holds values JSON cannot represent');
    output[name] = text;
  }
  process.stdout.write(`${JSON.stringify(output)}\n`);
}

main().catch((error) => {
  process.stderr.write(`${error instanceof ExportError ? error.message : error.stack}\n`);
  process.exit(1);
});
