// Render ```mermaid code blocks (the plan pictures of docs/projects/*/plan.md) as diagrams.
import mermaid from "https://cdn.jsdelivr.net/npm/mermaid@10/dist/mermaid.esm.min.mjs";

const blocks = document.querySelectorAll("pre > code.language-mermaid");
for (const code of blocks) {
  const div = document.createElement("div");
  div.className = "mermaid";
  div.textContent = code.textContent;
  code.parentElement.replaceWith(div);
}
mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });
await mermaid.run({ querySelector: "div.mermaid" });
