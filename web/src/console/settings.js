// The console's settings page (being built).
export async function render(ctx) {
  ctx.root.textContent = "";
}
