// The part of the S3 data lake a view may read: one bucket, some key prefixes in it,
// and optionally named tables within those prefixes.

// A character of an S3 key segment: not "/", not a control character, not "\".
const keyChar = String.raw`[^/\\\x00-\x1f\x7f]`;
const keyCharNoDot = String.raw`[^/.\\\x00-\x1f\x7f]`;
// ...and for a prefix, also none of the glob metacharacters *?[]{}: prefixes are literal.
const prefixChar = String.raw`[^/\\\x00-\x1f\x7f*?\[\]{}]`;
const prefixCharNoDot = String.raw`[^/.\\\x00-\x1f\x7f*?\[\]{}]`;
// A segment that is neither "." nor "..".
const segment = (c, noDot) => String.raw`(?:${noDot}${c}*|\.${noDot}${c}*|\.\.${c}+)`;

export default {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'urn:views-gateway:schemas:Subset',
  title: 'Subset',
  description:
    'The part of the S3 data lake a view may access: one bucket and key prefixes in it, ' +
    'optionally with named tables. The view\'s credentials allow nothing outside its subsets.',
  type: 'object',
  required: ['bucket', 'prefixes'],
  additionalProperties: false,
  properties: {
    bucket: {
      description: 'The S3 bucket.',
      $ref: '#/$defs/BucketName',
    },
    prefixes: {
      description:
        'Key prefixes in the bucket the view may access; every object whose key starts with one of them is in the subset.',
      type: 'array',
      minItems: 1,
      maxItems: 64,
      items: { $ref: '#/$defs/KeyPrefix' },
    },
    tables: {
      description:
        'Named tables, by SQL name: the view workload exposes each as a DuckDB view over its path. ' +
        'Names must be unique across all subsets of a view.',
      type: 'object',
      minProperties: 1,
      maxProperties: 256,
      propertyNames: { $ref: '#/$defs/TableName' },
      additionalProperties: { $ref: '#/$defs/Table' },
    },
    write: {
      description: 'Whether the view may also write under the prefixes. Read-only unless true.',
      type: 'boolean',
      default: false,
    },
  },
  examples: [
    { bucket: 'lake', prefixes: ['sales/'] },
    {
      bucket: 'acme-lake.eu-1',
      prefixes: ['sales/2025/', 'reference/currencies/'],
      tables: {
        orders: { path: 'sales/2025/orders/*.parquet', format: 'parquet' },
        currencies: { path: 'reference/currencies/rates.csv', format: 'csv' },
      },
    },
    {
      bucket: 'scratch',
      prefixes: ['teams/analytics/'],
      tables: { events: { path: 'teams/analytics/events/**/*.json', format: 'json' } },
      write: true,
    },
  ],
  $defs: {
    BucketName: {
      title: 'BucketName',
      description:
        'An S3 bucket name: 3 to 63 characters, lowercase letters, digits, "-" and "."; ' +
        'dot-separated labels that start and end with a letter or digit; not an IP address; ' +
        'none of the prefixes (xn--, sthree-, amzn-s3-demo-) or suffixes (-s3alias, --ol-s3, .mrap, --x-s3, --table-s3) S3 reserves.',
      type: 'string',
      minLength: 3,
      maxLength: 63,
      pattern:
        String.raw`^(?!xn--|sthree-|amzn-s3-demo-)(?!\d{1,3}(?:\.\d{1,3}){3}$)(?!.*(?:-s3alias|--ol-s3|\.mrap|--x-s3|--table-s3)$)` +
        String.raw`[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$`,
      examples: ['lake', 'acme-lake.eu-1', 'scratch'],
    },
    KeyPrefix: {
      title: 'KeyPrefix',
      description:
        'A key prefix: one or more "/"-terminated segments, with no leading "/", no empty, "." or ".." segment, ' +
        'no control characters, "\\" or glob metacharacters (*?[]{}).',
      type: 'string',
      minLength: 2,
      maxLength: 1024,
      pattern: String.raw`^(?:${segment(prefixChar, prefixCharNoDot)}/)+$`,
      examples: ['sales/', 'sales/2025/', 'reference/currencies/'],
    },
    TableName: {
      title: 'TableName',
      description: 'A table\'s SQL name: lowercase letters, digits and "_", not starting with a digit, at most 63 characters.',
      type: 'string',
      pattern: '^[a-z_][a-z0-9_]{0,62}$',
      examples: ['orders', 'currencies', '_staging_2025'],
    },
    Table: {
      title: 'Table',
      description: 'A named table: where its data is in the bucket and how it is stored.',
      type: 'object',
      required: ['path', 'format'],
      additionalProperties: false,
      properties: {
        path: {
          description:
            'An object key or a glob (*, **, ?, [...], {a,b}) relative to the bucket; it must lie within one of the subset\'s prefixes.',
          $ref: '#/$defs/TablePath',
        },
        format: {
          description: 'How the data is stored.',
          $ref: '#/$defs/TableFormat',
        },
      },
      examples: [{ path: 'sales/2025/orders/*.parquet', format: 'parquet' }],
    },
    TablePath: {
      title: 'TablePath',
      description:
        'A key or glob: "/"-separated segments, with no leading or trailing "/", no empty, "." or ".." segment, ' +
        'no control characters and no "\\".',
      type: 'string',
      minLength: 1,
      maxLength: 1024,
      pattern: String.raw`^${segment(keyChar, keyCharNoDot)}(?:/${segment(keyChar, keyCharNoDot)})*$`,
      examples: ['sales/2025/orders/*.parquet', 'reference/currencies/rates.csv', 'teams/analytics/events/**/*.json'],
    },
    TableFormat: {
      title: 'TableFormat',
      description: 'The storage format of a table\'s objects.',
      type: 'string',
      enum: ['parquet', 'csv', 'json'],
      examples: ['parquet'],
    },
  },
};

export const invalidExamples = [
  // bucket is required
  { prefixes: ['sales/'] },
  // prefixes are required
  { bucket: 'lake' },
  // at least one prefix
  { bucket: 'lake', prefixes: [] },
  // bucket names are lowercase
  { bucket: 'Lake', prefixes: ['sales/'] },
  // bucket names have at least 3 characters
  { bucket: 'la', prefixes: ['sales/'] },
  // bucket names are not IP addresses
  { bucket: '192.168.1.1', prefixes: ['sales/'] },
  // no two adjacent dots in a bucket name
  { bucket: 'acme..lake', prefixes: ['sales/'] },
  // xn-- is a reserved bucket name prefix
  { bucket: 'xn--lake', prefixes: ['sales/'] },
  // -s3alias is a reserved bucket name suffix
  { bucket: 'lake-s3alias', prefixes: ['sales/'] },
  // a bucket name ends with a letter or digit
  { bucket: 'lake-', prefixes: ['sales/'] },
  // a prefix ends with "/"
  { bucket: 'lake', prefixes: ['sales'] },
  // a prefix has no leading "/"
  { bucket: 'lake', prefixes: ['/sales/'] },
  // no ".." segments
  { bucket: 'lake', prefixes: ['sales/../hr/'] },
  // no "." segments
  { bucket: 'lake', prefixes: ['./sales/'] },
  // no empty segments ("//")
  { bucket: 'lake', prefixes: ['sales//2025/'] },
  // prefixes are literal, no globs
  { bucket: 'lake', prefixes: ['sales/*/'] },
  // the whole bucket is not a prefix
  { bucket: 'lake', prefixes: ['/'] },
  // table names are SQL identifiers: no uppercase
  { bucket: 'lake', prefixes: ['sales/'], tables: { Orders: { path: 'sales/orders.parquet', format: 'parquet' } } },
  // table names do not start with a digit
  { bucket: 'lake', prefixes: ['sales/'], tables: { '2025': { path: 'sales/orders.parquet', format: 'parquet' } } },
  // table names have at most 63 characters
  { bucket: 'lake', prefixes: ['sales/'], tables: { ['t'.repeat(64)]: { path: 'sales/orders.parquet', format: 'parquet' } } },
  // unknown format
  { bucket: 'lake', prefixes: ['sales/'], tables: { orders: { path: 'sales/orders.xlsx', format: 'xlsx' } } },
  // a table needs a path
  { bucket: 'lake', prefixes: ['sales/'], tables: { orders: { format: 'parquet' } } },
  // a table needs a format
  { bucket: 'lake', prefixes: ['sales/'], tables: { orders: { path: 'sales/orders.parquet' } } },
  // a table path has no ".." segments
  { bucket: 'lake', prefixes: ['sales/'], tables: { orders: { path: 'sales/../hr/salaries.csv', format: 'csv' } } },
  // a table path has no leading "/"
  { bucket: 'lake', prefixes: ['sales/'], tables: { orders: { path: '/sales/orders.parquet', format: 'parquet' } } },
  // tables, when given, are not empty
  { bucket: 'lake', prefixes: ['sales/'], tables: {} },
  // write is a boolean
  { bucket: 'lake', prefixes: ['sales/'], write: 'yes' },
  // no other properties
  { bucket: 'lake', prefixes: ['sales/'], region: 'eu-north-1' },
];
