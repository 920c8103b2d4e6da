import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev` serves the page on :5173 and proxies the hub and the REST API to a gateway
// (`make run` starts one on :5006; override with GATEWAY_URL).
const gateway = process.env.GATEWAY_URL ?? "http://127.0.0.1:5006";

export default defineConfig({
  plugins: [react()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    // Hashed names under assets/ (the gateway serves them as immutable).
    assetsDir: "assets",
  },
  server: {
    proxy: {
      "/hubs": { target: gateway, ws: true, changeOrigin: true },
      "/api": { target: gateway, changeOrigin: true },
    },
  },
});
