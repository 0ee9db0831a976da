// The body of POST /_api/views/<name>/extend (and of the in-view banner's extend).

export default {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'urn:views-gateway:schemas:DeadlineExtension',
  title: 'DeadlineExtension',
  description:
    'How much longer the current run of a view may last: its deadline moves this many seconds later, ' +
    'up to the operator\'s cap on one run (the view\'s status.maxDeadline).',
  type: 'object',
  required: ['seconds'],
  additionalProperties: false,
  properties: {
    seconds: {
      description: 'Seconds added to the run\'s deadline (1 minute to 24 hours).',
      type: 'integer',
      minimum: 60,
      maximum: 86400,
    },
  },
  examples: [{ seconds: 1800 }, { seconds: 3600 }],
};

export const invalidExamples = [
  // seconds is required
  {},
  // at least a minute
  { seconds: 10 },
  // at most a day
  { seconds: 90000 },
  // whole seconds
  { seconds: 60.5 },
  // a number, not text
  { seconds: '1800' },
  // no other properties
  { seconds: 1800, until: '2025-10-01T18:00:00Z' },
];
