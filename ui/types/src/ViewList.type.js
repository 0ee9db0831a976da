// The body of GET /_api/views: the views the caller may see, and (for admins) the view
// Services the gateway cannot read.

import View from './View.type.js';

const sales = {
  name: 'sales',
  hostname: 'sales.localhost',
  subsets: [{ bucket: 'lake', prefixes: ['sales/'] }],
  owner: 'ana',
  createdAt: '2025-10-01T08:00:00Z',
  deadlineSeconds: 3600,
  idleTimeoutSeconds: 900,
  status: { phase: 'cold', endpoints: [] },
};

export default {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'urn:views-gateway:schemas:ViewList',
  title: 'ViewList',
  description:
    'The views the caller owns or that are shared with them (an admin: every view), by name. ' +
    'Admins also get the view Services whose spec the gateway cannot read, so they can delete them.',
  type: 'object',
  required: ['views'],
  additionalProperties: false,
  properties: {
    views: {
      description: 'The views, sorted by name.',
      type: 'array',
      items: { $ref: View.$id },
    },
    invalid: {
      description:
        'Admins only: view Services whose `views.dev/spec` annotation is missing or broken. ' +
        'They get no routes and start nothing; `DELETE /_api/views/<name>` removes them.',
      type: 'array',
      items: { $ref: '#/$defs/InvalidView' },
    },
  },
  examples: [
    { views: [sales] },
    { views: [], invalid: [{ name: 'old', problem: 'views.dev/spec: missing field `subsets`' }] },
  ],
  $defs: {
    InvalidView: {
      title: 'InvalidView',
      description: 'A view Service the gateway cannot read, and why.',
      type: 'object',
      required: ['name', 'problem'],
      additionalProperties: false,
      properties: {
        name: {
          description: 'The view\'s name (from its Service).',
          type: 'string',
        },
        problem: {
          description: 'What is wrong with its spec, as the gateway read it.',
          type: 'string',
        },
      },
      examples: [{ name: 'old', problem: 'views.dev/spec: missing field `subsets`' }],
    },
  },
};

export const invalidExamples = [
  // views are always listed
  {},
  // an invalid view names its problem
  { views: [], invalid: [{ name: 'old' }] },
  // nothing else
  { views: [sales], next: 'x' },
];
