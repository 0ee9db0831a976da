// The body of GET /_api/lake/{bucket}/preview?path=…&format=…: the first rows of a table path.

import Subset from './Subset.type.js';

export default {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'urn:views-gateway:schemas:TablePreview',
  title: 'TablePreview',
  description:
    'The first rows of the first object a table path names (a key, or the first key a glob matches), read ' +
    'as a view would read it, within bounds: at most 100 rows and 50 columns, a bounded number of bytes ' +
    'read and seconds spent. Values are shown as text.',
  type: 'object',
  required: ['bucket', 'path', 'key', 'format', 'columns', 'rows', 'columnsOmitted', 'bytesRead'],
  additionalProperties: false,
  properties: {
    bucket: { description: 'The bucket.', $ref: `${Subset.$id}#/$defs/BucketName` },
    path: { description: 'The table path asked for.', $ref: `${Subset.$id}#/$defs/TablePath` },
    key: { description: 'The object previewed: the path itself, or the first key its glob matches.', type: 'string' },
    format: { description: 'How the object was read.', $ref: `${Subset.$id}#/$defs/TableFormat` },
    columns: {
      description: 'The columns shown, in order.',
      type: 'array',
      maxItems: 50,
      items: { $ref: '#/$defs/PreviewColumn' },
    },
    rows: {
      description: 'The first rows: one text value (or null) per column shown.',
      type: 'array',
      maxItems: 100,
      items: {
        description: 'A row.',
        type: 'array',
        items: { description: 'A value as text; null for SQL NULL.', type: ['string', 'null'] },
      },
    },
    columnsOmitted: { description: 'Columns the object has beyond those shown.', type: 'integer', minimum: 0 },
    bytesRead: { description: 'Bytes read from the lake for this preview.', type: 'integer', minimum: 0 },
  },
  examples: [
    {
      bucket: 'lake',
      path: 'sales/**/*.parquet',
      key: 'sales/region=africa/data_0.parquet',
      format: 'parquet',
      columns: [{ name: 'o_orderkey', type: 'Int64' }, { name: 'o_comment', type: 'Utf8' }],
      rows: [['1', 'nstructions sleep furiously'], ['2', null]],
      columnsOmitted: 0,
      bytesRead: 81234,
    },
  ],
  $defs: {
    PreviewColumn: {
      title: 'PreviewColumn',
      description: 'A column of a preview.',
      type: 'object',
      required: ['name'],
      additionalProperties: false,
      properties: {
        name: { description: 'Its name (for CSV, from the header line).', type: 'string' },
        type: { description: 'Its type, where the format stores one (Parquet: the Arrow type).', type: 'string' },
      },
    },
  },
};

export const invalidExamples = [
  // a preview has columns and rows
  { bucket: 'lake', path: 'a.csv', key: 'a.csv', format: 'csv', columnsOmitted: 0, bytesRead: 0 },
  // formats are those of tables
  { bucket: 'lake', path: 'a.xlsx', key: 'a.xlsx', format: 'xlsx', columns: [], rows: [], columnsOmitted: 0, bytesRead: 0 },
];
