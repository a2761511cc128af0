// What esbuild provides at build time: CSS imported as text, and the version from frontend/package.json.
declare module "*.css" {
  const text: string;
  export default text;
}
declare const __WIDGET_VERSION__: string;
