// The body of every error response of the gateway's /_api and of activation failures.

export default {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'urn:views-gateway:schemas:ApiError',
  title: 'ApiError',
  description:
    'An error response body. Clients branch on `error`, show `message` to people, ' +
    'and may read `details` for specifics; the HTTP status carries the class of error.',
  type: 'object',
  required: ['error', 'message'],
  additionalProperties: false,
  properties: {
    error: {
      description: 'What went wrong, machine-readable.',
      $ref: '#/$defs/ApiErrorCode',
    },
    message: {
      description: 'What went wrong, for people.',
      type: 'string',
    },
    details: {
      description:
        'Specifics, by error: for example `field` (a JSON Pointer into the request body: the field at fault, for a form ' +
        'to show the error beside it) for invalid_request, invalid_name, reserved_name, unprocessable, conflict and ' +
        'not_entitled on creating a view (`/name`, `/subsets/0/tables/orders/path`, `/subsets/0/prefixes`, ' +
        '`/sharedWith/groups`, …; invalid_request also lists every schema problem in `problems`), ' +
        '`parameter` (the query parameter at fault) for invalid_request on the lake browser, ' +
        '`reason` for view_failed and unprocessable previews, `retryAfterSeconds` for view_starting, kubernetes_unavailable and gateway_unavailable ' +
        '(every 503 also carries a Retry-After header).',
      type: 'object',
      additionalProperties: true,
    },
  },
  examples: [
    { error: 'not_found', message: 'There is no view named "sales"' },
    {
      error: 'invalid_name',
      message: 'A view name has 3 to 8 characters: lowercase letters, digits and "-", starting with a letter',
      details: { field: '/name' },
    },
    { error: 'conflict', message: 'A view named "sales" already exists' },
    {
      error: 'view_failed',
      message: 'The view could not start: Back-off pulling image "duckdb-view:1.0.0"',
      details: { reason: 'ImagePullBackOff' },
    },
    { error: 'view_starting', message: 'The view is still starting', details: { retryAfterSeconds: 5 } },
    {
      error: 'not_entitled',
      message: '"ana" may not read lake/sales-private/',
      details: { subset: 0, bucket: 'lake', prefix: 'sales-private/', access: 'read' },
    },
  ],
  $defs: {
    ApiErrorCode: {
      title: 'ApiErrorCode',
      description:
        'invalid_request (400): the body is not valid JSON or does not match the schema; ' +
        'invalid_name (400): the view name is not a valid name; ' +
        'reserved_name (422): the view name is reserved by the gateway; ' +
        'unauthenticated (401): no valid sign-in (a session cookie, or Authorization: Bearer <token> from the identity provider); ' +
        'forbidden (403): the caller may not do this (for example create a view for someone else); ' +
        'not_entitled (403): the caller, or someone a view is shared with, is not entitled to a subset of the view (details name the subset); ' +
        'not_found (404): no such view or route; ' +
        'method_not_allowed (405): the route does not take this method; ' +
        'conflict (409): a view with that name already exists; ' +
        'payload_too_large (413): the request body is too large; ' +
        'unsupported_media_type (415): the body is not application/json; ' +
        'unprocessable (422): the request is well-formed but cannot be carried out (for example a table path outside its subset\'s prefixes); ' +
        'over_cap (422): an extension would take a run past the operator\'s cap on one run (details: maxDeadline, allowedSeconds); ' +
        'quota_exceeded (429): the gateway\'s limit on views or running workloads is reached; ' +
        'internal (500): a bug or an unexpected failure; ' +
        'view_failed (502): the view\'s workload cannot start (image pull failure, unschedulable, quota); ' +
        'kubernetes_unavailable (503): the Kubernetes API cannot be reached; ' +
        'gateway_unavailable (503): the gateway\'s control plane (its sidecar) does not answer, for example while it restarts; ' +
        'view_starting (503): the view did not become ready in time, try again; ' +
        'lake_unavailable (503): the data lake did not answer the gateway (in time), try again.',
      type: 'string',
      enum: [
        'invalid_request',
        'invalid_name',
        'reserved_name',
        'unauthenticated',
        'forbidden',
        'not_entitled',
        'not_found',
        'method_not_allowed',
        'conflict',
        'payload_too_large',
        'unsupported_media_type',
        'unprocessable',
        'over_cap',
        'quota_exceeded',
        'internal',
        'view_failed',
        'kubernetes_unavailable',
        'gateway_unavailable',
        'view_starting',
        'lake_unavailable',
      ],
      examples: ['not_found'],
    },
  },
};

export const invalidExamples = [
  // unknown error code
  { error: 'oops', message: 'Something went wrong' },
  // codes are snake_case as listed
  { error: 'NOT_FOUND', message: 'There is no view named "sales"' },
  // message is required
  { error: 'not_found' },
  // message is a string
  { error: 'not_found', message: ['There is no view named "sales"'] },
  // error is required
  { message: 'There is no view named "sales"' },
  // details is an object
  { error: 'internal', message: 'Unexpected failure', details: 'stack trace' },
  // no other properties
  { error: 'not_found', message: 'There is no view named "sales"', status: 404 },
];
