// The body of GET /_api/lake/{bucket}?prefix=…: one level of the lake under a prefix.

import Subset from './Subset.type.js';

export default {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'urn:views-gateway:schemas:LakeListing',
  title: 'LakeListing',
  description:
    'The sub-prefixes ("folders") and objects directly under a prefix the caller may read, one page of ' +
    'them in key order. Listed by the gateway with its own lake keys, after checking the caller\'s entitlements.',
  type: 'object',
  required: ['bucket', 'prefix', 'prefixes', 'objects'],
  additionalProperties: false,
  properties: {
    bucket: { description: 'The bucket listed.', $ref: `${Subset.$id}#/$defs/BucketName` },
    prefix: { description: 'The prefix listed ("" is the whole bucket).', type: 'string' },
    prefixes: {
      description: 'Sub-prefixes directly under `prefix`, each ending with "/".',
      type: 'array',
      maxItems: 1000,
      items: { description: 'A key prefix.', type: 'string' },
    },
    objects: {
      description: 'Objects directly under `prefix`.',
      type: 'array',
      maxItems: 1000,
      items: { $ref: '#/$defs/LakeObject' },
    },
    next: {
      description: 'There is more: pass this as `after` for the next page.',
      type: 'string',
    },
  },
  examples: [
    {
      bucket: 'lake',
      prefix: 'sales/',
      prefixes: ['sales/region=eu/', 'sales/region=us/'],
      objects: [{ key: 'sales/README.csv', size: 120, lastModified: '2026-12-01T10:00:00Z' }],
    },
  ],
  $defs: {
    LakeObject: {
      title: 'LakeObject',
      description: 'An object in the lake.',
      type: 'object',
      required: ['key', 'size'],
      additionalProperties: false,
      properties: {
        key: { description: 'Its full key in the bucket.', type: 'string' },
        size: { description: 'Its size in bytes.', type: 'integer', minimum: 0 },
        lastModified: { description: 'When it was last written.', type: 'string', format: 'date-time' },
      },
    },
  },
};

export const invalidExamples = [
  // the listing says what it lists
  { prefixes: [], objects: [] },
  // an object has a size
  { bucket: 'lake', prefix: '', prefixes: [], objects: [{ key: 'a.csv' }] },
];
