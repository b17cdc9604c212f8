const { src, dest } = require('gulp');

// tsc does not copy node icons and codex files; n8n reads them from dist/ beside the compiled nodes.
function copyNodeAssets() {
	return src(['nodes/**/*.{png,svg}', 'nodes/**/*.node.json'], { encoding: false }).pipe(dest('dist/nodes'));
}

exports['build:icons'] = copyNodeAssets;
