// The body of GET /_api/me: who the caller is, as the gateway sees them, and what they may read.

import Subset from './Subset.type.js';
import ViewRequest from './ViewRequest.type.js';

export default {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'urn:views-gateway:schemas:Me',
  title: 'Me',
  description:
    'The signed-in caller: their user id and groups as the identity provider asserted them, ' +
    'whether they administer the gateway, and the parts of the lake the operator entitled them to.',
  type: 'object',
  required: ['user', 'groups', 'admin', 'grants'],
  additionalProperties: false,
  properties: {
    user: {
      description: 'The user id views are owned and shared by.',
      $ref: `${ViewRequest.$id}#/$defs/Owner`,
    },
    groups: {
      description: 'The groups the identity provider says the user belongs to.',
      type: 'array',
      items: { $ref: `${ViewRequest.$id}#/$defs/GroupName` },
    },
    admin: {
      description: 'Whether the user may see and manage every view (a member of an admin group).',
      type: 'boolean',
    },
    grants: {
      description: 'What the user may read (or write) in the lake, merged from every grant to them or their groups.',
      type: 'array',
      items: { $ref: '#/$defs/Grant' },
    },
  },
  examples: [
    {
      user: 'ana',
      groups: ['analysts'],
      admin: false,
      grants: [{ bucket: 'lake', prefixes: ['sales/'], access: 'read' }],
    },
  ],
  $defs: {
    Grant: {
      title: 'Grant',
      description: 'Access to key prefixes of one bucket.',
      type: 'object',
      required: ['bucket', 'prefixes', 'access'],
      additionalProperties: false,
      properties: {
        bucket: { description: 'The bucket.', $ref: `${Subset.$id}#/$defs/BucketName` },
        prefixes: {
          description: 'Key prefixes; the empty prefix is the whole bucket.',
          type: 'array',
          minItems: 1,
          items: { description: 'A key prefix.', type: 'string', maxLength: 1024 },
        },
        access: {
          description: 'read, or write (which includes read).',
          $ref: '#/$defs/Access',
        },
      },
    },
    Access: {
      title: 'Access',
      description: 'What a grant allows: read, or write (which includes read).',
      type: 'string',
      enum: ['read', 'write'],
    },
  },
};

export const invalidExamples = [
  // grants are always listed
  { user: 'ana', groups: [], admin: false },
  // access is read or write
  { user: 'ana', groups: [], admin: false, grants: [{ bucket: 'lake', prefixes: ['sales/'], access: 'all' }] },
];
