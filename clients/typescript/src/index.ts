// keyport's TypeScript client: openapi-fetch over the types openapi-typescript generates from
// keyport's OpenAPI document (src/schema.d.ts; `npm run generate` rebuilds it).
//
//   const keyport = createKeyportClient({ baseUrl: "https://keyport.internal", token: process.env.KEYPORT_API_KEY! });
//   const { data, error } = await keyport.GET("/api/v1/connections/{id}", { params: { path: { id } } });
//
// Every path, parameter, body and answer is typed; `error` is keyport's `{error: {code, message}}`.

import createClient, { type Client } from "openapi-fetch";
import type { components, paths } from "./schema.js";

export type { components, paths, operations } from "./schema.js";

/** A keyport object by its schema name: `Schema<"Connection">`. */
export type Schema<Name extends keyof components["schemas"]> = components["schemas"][Name];

export interface KeyportClientOptions {
  /** Where keyport runs, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** A workspace API key, or the admin token. */
  token: string;
  /** With the admin token: the workspace to act in (default `default`). */
  workspace?: string;
  /** With an API key that has `act-as-user`: the platform's id of the user to act for. */
  actAsUser?: string;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof globalThis.fetch;
}

export type KeyportClient = Client<paths>;

export function createKeyportClient(options: KeyportClientOptions): KeyportClient {
  const headers: Record<string, string> = { Authorization: `Bearer ${options.token}` };
  if (options.workspace) headers["X-Keyport-Workspace"] = options.workspace;
  if (options.actAsUser) headers["X-Keyport-User"] = options.actAsUser;
  return createClient<paths>({
    baseUrl: options.baseUrl.replace(/\/+$/, ""),
    headers,
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
}
