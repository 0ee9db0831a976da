// The body of GET /_api/lake: where the caller may start browsing the lake.

import Me from './Me.type.js';

export default {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'urn:views-gateway:schemas:LakeRoots',
  title: 'LakeRoots',
  description:
    'The buckets and key prefixes the caller may browse and build views from: their entitlements, merged ' +
    '(as in `Me.grants`). With sign-in off, every bucket the gateway\'s lake keys can list, whole.',
  type: 'object',
  required: ['roots'],
  additionalProperties: false,
  properties: {
    roots: {
      description: 'Per bucket and access, the outermost prefixes; the empty prefix is the whole bucket.',
      type: 'array',
      items: { $ref: `${Me.$id}#/$defs/Grant` },
    },
  },
  examples: [{ roots: [{ bucket: 'lake', prefixes: ['sales/'], access: 'read' }] }, { roots: [] }],
};

export const invalidExamples = [
  // roots are always listed
  {},
  // a root names its bucket
  { roots: [{ prefixes: ['sales/'], access: 'read' }] },
];
