// The body of POST /_api/views: what a client asks for when it creates a view.

import Route from './Route.type.js';
import Subset from './Subset.type.js';

// Printable text: no control characters, no leading or trailing whitespace.
const text = String.raw`^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$`;

export default {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'urn:views-gateway:schemas:ViewRequest',
  title: 'ViewRequest',
  description:
    'A request to create a view (the body of POST /_api/views). Creating a view starts nothing: ' +
    'its workload starts on the first request to its host.',
  type: 'object',
  required: ['name', 'subsets'],
  additionalProperties: false,
  properties: {
    name: {
      description: 'The view\'s name; the view is served at `<name>.<gateway hostname>`.',
      $ref: `${Route.$id}#/$defs/ViewName`,
    },
    subsets: {
      description: 'The parts of the data lake the view may access.',
      type: 'array',
      minItems: 1,
      maxItems: 16,
      items: { $ref: Subset.$id },
    },
    owner: {
      description:
        'Who the view belongs to: a user id as the identity provider names it (the gateway\'s user claim, `sub` by default). ' +
        'With sign-in on, the gateway sets it to the calling user; only admins may create a view for someone else.',
      $ref: '#/$defs/Owner',
    },
    sharedWith: {
      description: 'Who else may open the view and see it in the API, besides its owner.',
      $ref: '#/$defs/Shares',
    },
    deadlineSeconds: {
      description:
        'Hard cap on one run of the view\'s workload, in seconds, however busy it is ' +
        '(the Job\'s activeDeadlineSeconds). Defaults to the gateway\'s configured value.',
      $ref: '#/$defs/DeadlineSeconds',
    },
    idleTimeoutSeconds: {
      description:
        'Seconds without requests after which the view\'s workload is stopped (scale to zero). ' +
        'Defaults to the gateway\'s configured value.',
      $ref: '#/$defs/IdleTimeoutSeconds',
    },
  },
  examples: [
    { name: 'sales', subsets: [{ bucket: 'lake', prefixes: ['sales/'] }] },
    {
      name: 'q3-2025',
      subsets: [
        {
          bucket: 'lake',
          prefixes: ['sales/2025/'],
          tables: { orders: { path: 'sales/2025/orders/*.parquet', format: 'parquet' } },
        },
        { bucket: 'reference', prefixes: ['currencies/'] },
      ],
      owner: 'ana@example.com',
      sharedWith: { users: ['bob@example.com'], groups: ['finance'] },
      deadlineSeconds: 28800,
      idleTimeoutSeconds: 900,
    },
  ],
  $defs: {
    Owner: {
      title: 'Owner',
      description: 'Free text naming who a view belongs to (a user name or e-mail address): 1 to 253 printable characters.',
      type: 'string',
      minLength: 1,
      maxLength: 253,
      pattern: text,
      examples: ['ana@example.com', 'Data Team'],
    },
    Shares: {
      title: 'Shares',
      description:
        'Users and groups a view is shared with. Each must be entitled to read the view\'s subsets ' +
        'by grants that name that user or group.',
      type: 'object',
      additionalProperties: false,
      properties: {
        users: {
          description: 'User ids (as in `owner`).',
          type: 'array',
          maxItems: 64,
          uniqueItems: true,
          items: { $ref: '#/$defs/Owner' },
        },
        groups: {
          description: 'Group names as the identity provider sends them in its groups claim.',
          type: 'array',
          maxItems: 64,
          uniqueItems: true,
          items: { $ref: '#/$defs/GroupName' },
        },
      },
      examples: [{ users: ['bob'], groups: ['finance'] }, {}],
    },
    GroupName: {
      title: 'GroupName',
      description: 'A group name as the identity provider sends it: 1 to 253 printable characters.',
      type: 'string',
      minLength: 1,
      maxLength: 253,
      pattern: text,
      examples: ['finance', 'analysts'],
    },
    DeadlineSeconds: {
      title: 'DeadlineSeconds',
      description: 'A hard cap on one run of a view\'s workload, in seconds: 1 minute to 24 hours.',
      type: 'integer',
      minimum: 60,
      maximum: 86400,
      examples: [3600],
    },
    IdleTimeoutSeconds: {
      title: 'IdleTimeoutSeconds',
      description: 'How long a view\'s workload may go without requests before it is stopped, in seconds: 1 minute to 24 hours.',
      type: 'integer',
      minimum: 60,
      maximum: 86400,
      examples: [900],
    },
  },
};

const subsets = [{ bucket: 'lake', prefixes: ['sales/'] }];

export const invalidExamples = [
  // name is required
  { subsets },
  // subsets are required
  { name: 'sales' },
  // at least one subset
  { name: 'sales', subsets: [] },
  // at most 16 subsets
  { name: 'sales', subsets: Array.from({ length: 17 }, () => subsets[0]) },
  // name must be a valid view name (too short)
  { name: 'ab', subsets },
  // an invalid subset (prefix without trailing "/")
  { name: 'sales', subsets: [{ bucket: 'lake', prefixes: ['sales'] }] },
  // deadline below 1 minute
  { name: 'sales', subsets, deadlineSeconds: 59 },
  // deadline above 24 hours
  { name: 'sales', subsets, deadlineSeconds: 86401 },
  // deadline in whole seconds
  { name: 'sales', subsets, deadlineSeconds: 3600.5 },
  // deadline is a number, not a string
  { name: 'sales', subsets, deadlineSeconds: '3600' },
  // idle timeout below 1 minute
  { name: 'sales', subsets, idleTimeoutSeconds: 0 },
  // owner is not empty
  { name: 'sales', subsets, owner: '' },
  // owner has no control characters
  { name: 'sales', subsets, owner: 'ana\nbob' },
  // owner has no surrounding whitespace
  { name: 'sales', subsets, owner: ' ana' },
  // shares are users and groups only
  { name: 'sales', subsets, sharedWith: { everyone: true } },
  // a group name is not empty
  { name: 'sales', subsets, sharedWith: { groups: [''] } },
  // each user once
  { name: 'sales', subsets, sharedWith: { users: ['bob', 'bob'] } },
  // the hostname follows from the name and the gateway; it is not requested
  { name: 'sales', subsets, hostname: 'sales.localhost' },
];
