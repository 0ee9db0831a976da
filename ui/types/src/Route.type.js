// A view's route: the name a view is known by and the host it answers on.

export default {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'urn:views-gateway:schemas:Route',
  title: 'Route',
  description:
    'How a view is reached: its name and the host that routes to it. ' +
    'The gateway matches the Host header (port removed) exactly against `hostname`; there is no wildcard.',
  type: 'object',
  required: ['name', 'hostname'],
  additionalProperties: false,
  properties: {
    name: {
      description: 'The view\'s name, the first label of `hostname`.',
      $ref: '#/$defs/ViewName',
    },
    hostname: {
      description: 'The full host of the view: `<name>.<gateway hostname>`.',
      $ref: '#/$defs/ViewHostname',
    },
  },
  examples: [
    { name: 'sales', hostname: 'sales.localhost' },
    { name: 'q3-2025', hostname: 'q3-2025.views.example.com' },
  ],
  $defs: {
    ViewName: {
      title: 'ViewName',
      description:
        'A view\'s name: a DNS label of 3 to 8 characters, lowercase letters, digits and "-", ' +
        'starting with a letter and not ending with "-". It becomes the first label of the view\'s host and ' +
        'part of Kubernetes object names. The gateway may also refuse reserved names (error `reserved_name`).',
      type: 'string',
      minLength: 3,
      maxLength: 8,
      pattern: '^[a-z][a-z0-9-]*[a-z0-9]$',
      examples: ['sales', 'abc', 'q3-2025', 'team42'],
    },
    ViewHostname: {
      title: 'ViewHostname',
      description:
        'A view\'s host: its name, a dot, then the gateway hostname (one or more DNS labels, lowercase). ' +
        'No port, no trailing dot.',
      type: 'string',
      maxLength: 253,
      pattern: '^[a-z][a-z0-9-]{1,6}[a-z0-9](\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$',
      examples: ['sales.localhost', 'q3-2025.views.example.com'],
    },
  },
};

export const invalidExamples = [
  // name too short: at least 3 characters
  { name: 'ab', hostname: 'ab.localhost' },
  // name too long: at most 8 characters
  { name: 'abcdefghi', hostname: 'abcdefghi.localhost' },
  // name must start with a letter
  { name: '1abc', hostname: '1abc.localhost' },
  // name must not end with "-"
  { name: 'abc-', hostname: 'abc-.localhost' },
  // name is lowercase only
  { name: 'Sales', hostname: 'sales.localhost' },
  // "_" and "." are not allowed in a name
  { name: 'ab_c', hostname: 'ab_c.localhost' },
  // hostname needs the gateway hostname after the name
  { name: 'sales', hostname: 'sales' },
  // hostname carries no port
  { name: 'sales', hostname: 'sales.localhost:8080' },
  // hostname has no empty labels
  { name: 'sales', hostname: 'sales..localhost' },
  // hostname is lowercase
  { name: 'sales', hostname: 'sales.LOCALHOST' },
  // hostname is required
  { name: 'sales' },
  // no other properties
  { name: 'sales', hostname: 'sales.localhost', port: 80 },
];
