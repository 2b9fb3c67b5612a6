// The console's keys page (being built).
export async function render(ctx) {
  ctx.root.textContent = "";
}
